module example.com/tether-redis-reader

go 1.21
