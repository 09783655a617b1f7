// Package caddywebhooks is the caddy-webhooks plugin. Importing it (as
// xcaddy does with --with) registers the webhooks app, the webhook_emit
// handler and the admin API module with Caddy.
package caddywebhooks

import (
	_ "github.com/caddy-webhooks/caddy-webhooks/caddymodule"
)
