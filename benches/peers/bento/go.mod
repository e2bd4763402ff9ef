module meshguard-bench-bento

go 1.24
