// Command benchserver is the Go neffos (github.com/kataras/neffos v0.0.25) peer of the
// neffos-rs benchmark (`cargo xtask bench`, benches/src/suite).
//
// It serves the neffos endpoint at /echo with the gorilla upgrader and the same behaviour
// as the Rust bench server (neffos-bench-server):
//
//	namespace "bench"
//	  fanout   broadcast "msg" with the same body to every other connection of the
//	           namespace (the message's room empty) or of the message's room
//	  ask      reply with the same body
//
// It prints {"event":"listening","addr":"host:port"} once listening and exits when its
// standard input is closed or after -lifetime.
//
// -exchange joins several such processes through neffos's own StackExchanges, with the
// channel prefix / subject prefix "bench":
//
//	none    one process on its own (default)
//	redis   github.com/kataras/neffos/stackexchange/redis at -redis-addr (host:port);
//	        namespace channel "bench.bench.", one redis subscriber connection per client
//	nats    github.com/kataras/neffos/stackexchange/nats at -nats-url;
//	        namespace subject "bench.bench", one nats subscription per client
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/kataras/neffos"
	"github.com/kataras/neffos/gorilla"
	"github.com/kataras/neffos/stackexchange/nats"
	"github.com/kataras/neffos/stackexchange/redis"
)

var (
	addr      = flag.String("addr", "127.0.0.1:0", "listen address")
	lifetime  = flag.Duration("lifetime", 10*time.Minute, "exit after this long")
	exchange  = flag.String("exchange", "none", "the StackExchange joining processes: none, redis or nats")
	redisAddr = flag.String("redis-addr", "127.0.0.1:6379", "redis address (host:port) for -exchange redis")
	natsURL   = flag.String("nats-url", "nats://127.0.0.1:4222", "nats URL for -exchange nats")
)

// prefix is the redis channel prefix and the nats subject prefix of the benchmark.
const prefix = "bench"

// stackExchange returns the StackExchange selected by -exchange, or nil for "none".
func stackExchange() (neffos.StackExchange, error) {
	switch *exchange {
	case "none":
		return nil, nil
	case "redis":
		exc, err := redis.NewStackExchange(redis.Config{Addr: *redisAddr}, prefix)
		if err != nil {
			return nil, err
		}
		return exc, nil
	case "nats":
		exc, err := nats.NewStackExchange(*natsURL)
		if err != nil {
			return nil, err
		}
		exc.SubjectPrefix = prefix
		return exc, nil
	default:
		return nil, fmt.Errorf("unknown -exchange %q (none, redis or nats)", *exchange)
	}
}

func events() neffos.Namespaces {
	return neffos.Namespaces{
		"bench": neffos.Events{
			"fanout": func(ns *neffos.NSConn, msg neffos.Message) error {
				ns.Conn.Server().Broadcast(ns.Conn, neffos.Message{
					Namespace: "bench",
					Room:      msg.Room,
					Event:     "msg",
					Body:      msg.Body,
				})
				return nil
			},
			"ask": func(_ *neffos.NSConn, msg neffos.Message) error {
				return neffos.Reply(msg.Body)
			},
		},
	}
}

func main() {
	flag.Parse()

	server := neffos.New(gorilla.DefaultUpgrader, events())
	exc, err := stackExchange()
	if err != nil {
		fmt.Fprintln(os.Stderr, "exchange:", err)
		os.Exit(1)
	}
	if exc != nil {
		if err := server.UseStackExchange(exc); err != nil {
			fmt.Fprintln(os.Stderr, "exchange:", err)
			os.Exit(1)
		}
	}
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Printf("{\"event\":\"listening\",\"addr\":%q}\n", listener.Addr().String())

	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	go func() {
		time.Sleep(*lifetime)
		os.Exit(0)
	}()

	mux := http.NewServeMux()
	mux.Handle("/echo", server)
	// Go's net/http sets TCP_NODELAY on accepted connections by default.
	if err := http.Serve(listener, mux); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
