module github.com/herald-im/herald

go 1.26.8
