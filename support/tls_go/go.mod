module guardiantlstest

go 1.19
