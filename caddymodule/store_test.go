package caddymodule

import (
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

func openStoreForTest(dir string) (*queue.Store, error) {
	return queue.Open(queue.Options{Dir: dir, SmallMemory: true})
}
