module tlsdial

go 1.19
