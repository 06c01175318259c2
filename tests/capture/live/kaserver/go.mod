module kaserver

go 1.19
