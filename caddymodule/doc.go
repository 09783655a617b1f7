// Package caddymodule is the Caddy glue of caddy-webhooks: the webhooks app,
// the webhook_emit handler, the admin routes, Caddyfile parsing and metrics.
package caddymodule
