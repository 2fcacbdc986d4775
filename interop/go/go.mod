module github.com/neffos-rs/neffos-rs/interop/go

go 1.27

require (
	github.com/gorilla/websocket v1.5.3
	github.com/kataras/neffos v0.0.25
)
