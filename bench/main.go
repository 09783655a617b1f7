// Command bench is the load harness of caddy-webhooks. In one run, on
// loopback, it measures the ceilings of the machine (a bare Go HTTP client
// POSTing to a fast subscriber, bare Badger commits with SyncWrites) and the
// real sidecar (the built Caddy binary, a child process with its own storage)
// against them: durable emits/s at several concurrencies, deliveries/s,
// emit→delivery latency at a fixed offered rate, a ledger of every
// acknowledged event, and peak RSS and drain time with a large paused
// backlog. It prints a table and writes it to bench/RESULTS.md.
//
//	go run ./bench            # full run (1 M backlog, a few minutes)
//	go run ./bench -quick     # seconds-long smoke run, as in .ci/run
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == subscriberArg {
		if err := runSubscriber(); err != nil {
			fmt.Fprintln(os.Stderr, "bench subscriber:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run())
}

func run() int {
	var o options
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	o.register(fs)
	_ = fs.Parse(os.Args[1:])
	o.applyQuick(fs)
	if !validMemLimit(o.MemLimit) {
		fmt.Fprintf(os.Stderr, "bench: -memlimit %q: want off or a size such as 230MiB (bytes, or with a B, KiB, MiB, GiB or TiB suffix)\n", o.MemLimit)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if o.Out == "" {
		o.Out = filepath.Join(root, "bench", "RESULTS.md")
	}
	h := &harness{opt: o, root: root, args: os.Args[1:]}
	res := h.run(ctx)
	report := h.render(res)
	fmt.Print("\n" + report.text)
	if err := os.WriteFile(o.Out, []byte(report.markdown), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench: write results:", err)
		return 2
	}
	fmt.Println("results written to", o.Out)
	return res.exitCode(o.Quick)
}
