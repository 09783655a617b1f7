package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/caddy-webhooks/caddy-webhooks/delivery"
	"github.com/caddy-webhooks/caddy-webhooks/policy"
	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

func init() {
	caddy.RegisterModule(new(App))
}

// Caddy event names emitted by the app.
const (
	EventSubscriptionPaused    = "webhook_subscription_paused"
	EventSubscriptionActivated = "webhook_subscription_activated"
)

// rotatedSecretTTL is how long a replaced secret keeps signing.
const rotatedSecretTTL = 24 * time.Hour

// maxRotatedSecrets bounds the replaced secrets that still sign: each adds
// a signature to every request, so rotating in a loop must not grow the
// header without bound. Past it, the ones closest to expiry go first.
const maxRotatedSecrets = 4

// App is the `webhooks` Caddy app: it owns (through a UsagePool shared with
// the app of the next or previous config) the store and the dispatcher of
// one storage directory, and holds the catalog and settings the emit
// handler and the admin API use.
type App struct {
	// Storage is the Badger directory. Default: Caddy's data dir + /webhooks.
	Storage string `json:"storage,omitempty"`
	// PauseAfter is the consecutive failed attempts that pause a
	// subscription. Default 10.
	PauseAfter int `json:"pause_after,omitempty"`
	// Retry is the delays before attempts 2, 3, … Default
	// 5s 30s 2m 10m 30m 1h 3h 6h 12h 24h.
	Retry []caddy.Duration `json:"retry,omitempty"`
	// Timeout is the limit of one attempt. Default 15s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Workers is the number of attempts in flight over all subscriptions.
	// Default 64.
	Workers int `json:"workers,omitempty"`
	// MaxInFlight is the number of attempts in flight per subscription.
	// Default 8.
	MaxInFlight int `json:"max_in_flight,omitempty"`
	// AllowNetworks are CIDR prefixes (or single addresses) that
	// destinations may be in besides public addresses.
	AllowNetworks []string `json:"allow_networks,omitempty"`
	// Retention is how long delivered events are kept for queries. Default
	// 24h. It is read when the store is opened: changing it takes effect at
	// the next start, not at a reload.
	Retention caddy.Duration `json:"retention,omitempty"`
	// MinFree is the free space, in bytes, kept on the storage filesystem:
	// while less is free, emits are answered 503 (Badger faults instead of
	// failing when a disk fills up). Default 64 MiB; -1: no check. Read
	// when the store is opened, like Retention.
	MinFree int64 `json:"min_free,omitempty"`
	// Catalog is "none" to start from an empty catalog instead of the
	// default one ("" or "default").
	Catalog string `json:"catalog,omitempty"`
	// EventTypes adds event types to the catalog (or overrides default ones).
	EventTypes []EventType `json:"event_types,omitempty"`
	// Subscriptions are the config-owned subscriptions, (re)applied at
	// every load with their name as id.
	Subscriptions []SubscriptionConfig `json:"subscriptions,omitempty"`

	ctx     caddy.Context
	logger  *zap.Logger
	events  *caddyevents.App
	dir     string
	cfg     delivery.Config
	catalog *catalog
	now     func() time.Time
	rt      atomic.Pointer[runtime]
}

// SubscriptionConfig is a subscription declared in the config.
type SubscriptionConfig struct {
	// Name is the subscription id.
	Name string `json:"name"`
	// URL is where events are POSTed.
	URL string `json:"url"`
	// Events are the event types it receives, or ["*"].
	Events []string `json:"events"`
	// Secret is the signing secret ("whsec_…"). When empty, one is
	// generated once and kept across reloads (read it with rotate-secret).
	Secret string `json:"secret,omitempty"`
	// Headers are sent with every delivery.
	Headers map[string]string `json:"headers,omitempty"`
	// Description is free text.
	Description string `json:"description,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "webhooks",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision validates the config and fills in defaults. It opens nothing:
// during a reload the previous config still owns the store.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	if err := a.setup(); err != nil {
		return err
	}
	evApp, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading events app: %w", err)
	}
	a.events = evApp.(*caddyevents.App)
	if err := a.events.On("started", configStarted{app: a}); err != nil {
		return fmt.Errorf("subscribing to the started event: %w", err)
	}
	if err := registerMetrics(ctx.GetMetricsRegistry(), a); err != nil {
		return fmt.Errorf("registering webhooks metrics: %w", err)
	}
	return nil
}

// resolvePath resolves the symlinks of the longest existing prefix of the
// absolute path p (the directory itself may not exist yet).
func resolvePath(p string) string {
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// setup validates the JSON config and computes the derived settings; it
// has no side effects, so the fuzz target can call it.
func (a *App) setup() error {
	if a.now == nil {
		a.now = time.Now
	}
	storage := a.Storage
	if storage == "" {
		storage = filepath.Join(caddy.AppDataDir(), "webhooks")
	}
	storage = caddy.NewReplacer().ReplaceKnown(storage, "")
	dir, err := filepath.Abs(storage)
	if err != nil {
		return fmt.Errorf("storage %q: %w", storage, err)
	}
	// The store is shared between configs by its directory: two spellings
	// of one directory (a symlink) must find the same store, or the second
	// open fails on Badger's lock.
	a.dir = resolvePath(filepath.Clean(dir))

	cfg := delivery.Config{
		PauseAfter:  policy.DefaultPauseAfter,
		Retry:       slices.Clone(policy.DefaultRetry),
		Jitter:      policy.DefaultJitter,
		Timeout:     policy.DefaultTimeout,
		Workers:     policy.DefaultWorkers,
		MaxInFlight: policy.DefaultMaxInFlight,
	}
	if err := positive("pause_after", a.PauseAfter, &cfg.PauseAfter); err != nil {
		return err
	}
	if err := positive("workers", a.Workers, &cfg.Workers); err != nil {
		return err
	}
	if err := positive("max_in_flight", a.MaxInFlight, &cfg.MaxInFlight); err != nil {
		return err
	}
	if a.Timeout < 0 {
		return fmt.Errorf("timeout: must be positive, got %s", time.Duration(a.Timeout))
	} else if a.Timeout > 0 {
		cfg.Timeout = time.Duration(a.Timeout)
	}
	if a.MinFree < -1 {
		return fmt.Errorf("min_free: must be a size or -1 (no check), got %d", a.MinFree)
	}
	if a.Retention < 0 {
		return fmt.Errorf("retention: must be positive, got %s", time.Duration(a.Retention))
	}
	if len(a.Retry) > 0 {
		cfg.Retry = make([]time.Duration, len(a.Retry))
		for i, d := range a.Retry {
			if d <= 0 {
				return fmt.Errorf("retry[%d]: delays must be positive, got %s", i, time.Duration(d))
			}
			cfg.Retry[i] = time.Duration(d)
		}
	}
	for i, s := range a.AllowNetworks {
		p, err := parsePrefix(s)
		if err != nil {
			return fmt.Errorf("allow_networks[%d]: %w", i, err)
		}
		cfg.AllowNetworks = append(cfg.AllowNetworks, p)
	}
	a.cfg = cfg

	switch a.Catalog {
	case "", "default", "none":
	default:
		return fmt.Errorf(`catalog: %q is not "default" or "none"`, a.Catalog)
	}
	a.catalog, err = buildCatalog(a.Catalog == "none", a.EventTypes)
	if err != nil {
		return err
	}

	dest := policy.Destinations{Allow: cfg.AllowNetworks}
	seen := make(map[string]bool, len(a.Subscriptions))
	for i, sc := range a.Subscriptions {
		where := fmt.Sprintf("subscriptions[%d] (%s)", i, sc.Name)
		if err := validSubscriptionName(sc.Name); err != nil {
			return fmt.Errorf("subscriptions[%d]: %w", i, err)
		}
		if seen[sc.Name] {
			return fmt.Errorf("%s: subscription declared twice", where)
		}
		seen[sc.Name] = true
		if sc.URL == "" {
			return fmt.Errorf("%s: url: required", where)
		}
		if err := checkURL(dest, sc.URL); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if err := a.catalog.checkSubscribable(sc.Events); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if err := validateHeaders(sc.Headers); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if sc.Secret != "" {
			if err := validateSecret(sc.Secret); err != nil {
				return fmt.Errorf("%s: secret: %w", where, err)
			}
		}
	}
	return nil
}

func positive(field string, v int, dst *int) error {
	if v < 0 {
		return fmt.Errorf("%s: must be positive, got %d", field, v)
	}
	if v > 0 {
		*dst = v
	}
	return nil
}

// parsePrefix accepts a CIDR prefix or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		return p.Masked(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR or address %q: %w", s, err)
	}
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

// validSubscriptionName checks a config subscription's name, which becomes
// its id. "sub_" is the prefix of API ids, so it cannot collide with one.
func validSubscriptionName(name string) error {
	if !subNameRE.MatchString(name) {
		return fmt.Errorf("subscription name %q: want [A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name)
	}
	if strings.HasPrefix(name, "sub_") {
		return fmt.Errorf("subscription name %q: the sub_ prefix is reserved for admin API ids", name)
	}
	return nil
}

// Start acquires the store and dispatcher of the storage directory (shared
// with the app of the config being replaced, if any), pushes this config
// into the engine, applies the config's subscriptions and publishes the app
// for the handler and the admin API.
//
// Start applies only what a failed load can undo: the engine's workers,
// timeout, retry and allow_networks (before the subscriptions, so a url
// moved into a newly allowed network is never dialled under the old
// rules), and the Caddyfile subscriptions created or changed. The load can
// still fail after this Start (another app of the config not starting),
// and the running config then keeps what it had. What cannot be undone
// waits until this config has taken over (takeOver, on Caddy's "started"
// event, or when the replaced config stops): deleting the Caddyfile
// subscriptions no longer declared, which drops their pending deliveries,
// and a changed pause_after, whose pauses are recorded at once.
func (a *App) Start() error {
	v, loaded, err := pool.LoadOrNew(a.dir, func() (caddy.Destructor, error) {
		return openRuntime(a)
	})
	if err != nil {
		return fmt.Errorf("opening webhooks storage %s: %w", a.dir, err)
	}
	rt := v.(*runtime)
	prev := newestAppFor(a.dir)
	if loaded {
		cfg := a.cfg
		cfg.PauseAfter = rt.engine.Config().PauseAfter // see takeOver
		rt.engine.SetLogger(a.logger)
		rt.engine.Update(cfg)
	}
	if err := a.applySubscriptions(rt, false); err != nil {
		// Caddy does not Stop an app whose Start failed: give the engine
		// and the store back to the config that keeps running, as Stop
		// would.
		if loaded && prev != nil {
			prev.restore(rt)
		}
		if _, derr := pool.Delete(a.dir); derr != nil {
			a.logger.Error("releasing webhooks storage", zap.Error(derr))
		}
		return err
	}
	a.rt.Store(rt)
	runningMu.Lock()
	running = append(running, a)
	runningMu.Unlock()
	a.logger.Info("webhooks app started",
		zap.String("storage", a.dir),
		zap.Bool("reused_store", loaded),
		zap.Int("subscriptions", len(a.Subscriptions)))
	return nil
}

// Stop releases the app's hold on the store. The store and engine are
// closed only when no other running config holds them. If this app was
// the newest one of its storage (a failed load rolling back), the
// remaining newest config is restored in the engine and the store. If a
// newer one runs (this config was replaced), the newer one takes over.
func (a *App) Stop() error {
	rt := a.rt.Swap(nil)
	if rt == nil {
		return nil
	}
	runningMu.Lock()
	wasNewest := newestFor(a.dir) == a
	running = slices.DeleteFunc(running, func(x *App) bool { return x == a })
	next := newestFor(a.dir)
	runningMu.Unlock()
	switch {
	case wasNewest && next != nil:
		next.restore(rt)
	case next != nil:
		next.takeOver(rt) // done already on "started", unless the event did not come
	}
	if _, err := pool.Delete(a.dir); err != nil {
		return fmt.Errorf("closing webhooks storage %s: %w", a.dir, err)
	}
	return nil
}

// restore puts a's config back in force after a newer config failed: its
// subscriptions (the newer one's are deleted, changed ones set back) and
// its engine settings.
func (a *App) restore(rt *runtime) {
	if err := a.applySubscriptions(rt, true); err != nil {
		a.logger.Error("re-applying the running config's subscriptions", zap.Error(err))
	}
	rt.engine.SetLogger(a.logger)
	rt.engine.Update(a.cfg)
}

// takeOver does what waits until a's config has taken over: it deletes
// the Caddyfile subscriptions a no longer declares, puts a's pause_after
// in force, and starts a store's engine just opened (its start records the
// pauses of counts at or over pause_after; a load that fails never starts
// it, so no attempt is made under a config that never ran). Doing it again
// changes nothing.
func (a *App) takeOver(rt *runtime) {
	if err := a.applySubscriptions(rt, true); err != nil {
		a.logger.Error("deleting the subscriptions no longer in the config", zap.Error(err))
	}
	if pauseAfterOf(a.cfg) != rt.engine.Config().PauseAfter {
		rt.engine.Update(a.cfg)
	}
	rt.engine.Start()
}

// configStarted is the handler of Caddy's "started" event, emitted once
// every app of a config has started: the config has taken over.
type configStarted struct{ app *App }

// Handle implements caddyevents.Handler.
func (h configStarted) Handle(context.Context, caddy.Event) error {
	if rt := h.app.rt.Load(); rt != nil && newestAppFor(h.app.dir) == h.app {
		h.app.takeOver(rt)
	}
	return nil
}

// pauseAfterOf is the pause_after cfg puts in force.
func pauseAfterOf(cfg delivery.Config) int {
	if cfg.PauseAfter < 1 {
		return policy.DefaultPauseAfter
	}
	return cfg.PauseAfter
}

// applySubscriptions makes the store's config-sourced subscriptions match
// the config: creates or updates the declared ones (keeping their state and
// counters) and, with deleteUndeclared, deletes the ones no longer declared.
func (a *App) applySubscriptions(rt *runtime, deleteUndeclared bool) error {
	subEdits.Lock()
	defer subEdits.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	declared := make(map[string]bool, len(a.Subscriptions))
	for _, sc := range a.Subscriptions {
		declared[sc.Name] = true
		existing, err := rt.store.Subscription(sc.Name)
		exists := err == nil
		if err != nil && !errors.Is(err, queue.ErrNotFound) {
			return fmt.Errorf("reading subscription %s: %w", sc.Name, err)
		}
		if exists && existing.Source != queue.SourceCaddyfile {
			return fmt.Errorf("subscription %s: an admin API subscription with that id exists", sc.Name)
		}
		secrets, err := a.configSecrets(sc, existing, exists)
		if err != nil {
			return fmt.Errorf("subscription %s: %w", sc.Name, err)
		}
		want := queue.Subscription{
			ID:          sc.Name,
			URL:         sc.URL,
			Events:      slices.Clone(sc.Events),
			Description: sc.Description,
			Headers:     sc.Headers,
			Secrets:     secrets,
			Source:      queue.SourceCaddyfile,
		}
		if exists && sameConfig(existing, want) {
			continue
		}
		if _, err := rt.store.PutSubscription(ctx, want); err != nil {
			return fmt.Errorf("storing subscription %s: %w", sc.Name, err)
		}
		rt.engine.SubscriptionChanged(sc.Name)
	}
	if !deleteUndeclared {
		return nil
	}
	for _, s := range rt.store.Subscriptions() {
		if s.Source != queue.SourceCaddyfile || declared[s.ID] {
			continue
		}
		if err := rt.store.DeleteSubscription(ctx, s.ID); err != nil && !errors.Is(err, queue.ErrNotFound) {
			return fmt.Errorf("deleting subscription %s (no longer in the config): %w", s.ID, err)
		}
		rt.engine.SubscriptionChanged(s.ID)
	}
	return nil
}

// configSecrets decides the secrets of a config subscription: the
// configured one (a changed one is rotated in, the previous one signing
// alongside for 24 h), or the existing ones, or a generated one.
func (a *App) configSecrets(sc SubscriptionConfig, existing queue.Subscription, exists bool) ([]queue.Secret, error) {
	now := a.now()
	var kept []queue.Secret
	if exists {
		kept = liveSecrets(existing.Secrets, now)
	}
	switch {
	case sc.Secret == "" && len(kept) > 0:
		return kept, nil
	case sc.Secret == "":
		s, err := delivery.NewSecret()
		if err != nil {
			return nil, fmt.Errorf("generating secret: %w", err)
		}
		return []queue.Secret{{Value: s}}, nil
	case len(kept) > 0 && kept[0].Value == sc.Secret:
		return kept, nil
	case len(kept) > 0:
		return rotateSecrets(kept, sc.Secret, now), nil
	default:
		return []queue.Secret{{Value: sc.Secret}}, nil
	}
}

// liveSecrets drops the rotated-out secrets that have expired.
func liveSecrets(secrets []queue.Secret, now time.Time) []queue.Secret {
	out := make([]queue.Secret, 0, len(secrets))
	for _, s := range secrets {
		if s.ExpiresAt.IsZero() || s.ExpiresAt.After(now) {
			out = append(out, s)
		}
	}
	return out
}

// rotateSecrets puts fresh first; the current secret keeps signing for
// rotatedSecretTTL; older rotated ones keep their own expiry, the newest
// maxRotatedSecrets of them.
func rotateSecrets(current []queue.Secret, fresh string, now time.Time) []queue.Secret {
	out := []queue.Secret{{Value: fresh}}
	for _, s := range liveSecrets(current, now) {
		if s.Value == fresh {
			continue
		}
		if s.ExpiresAt.IsZero() {
			s.ExpiresAt = now.Add(rotatedSecretTTL)
		}
		out = append(out, s)
	}
	old := out[1:]
	slices.SortStableFunc(old, func(a, b queue.Secret) int { return b.ExpiresAt.Compare(a.ExpiresAt) })
	return out[:1+min(len(old), maxRotatedSecrets)]
}

func sameConfig(a, b queue.Subscription) bool {
	if a.URL != b.URL || a.Description != b.Description || a.Source != b.Source ||
		!slices.Equal(a.Events, b.Events) || len(a.Headers) != len(b.Headers) ||
		len(a.Secrets) != len(b.Secrets) {
		return false
	}
	for k, v := range a.Headers {
		if bv, ok := b.Headers[k]; !ok || bv != v {
			return false
		}
	}
	for i := range a.Secrets {
		if a.Secrets[i].Value != b.Secrets[i].Value || !a.Secrets[i].ExpiresAt.Equal(b.Secrets[i].ExpiresAt) {
			return false
		}
	}
	return true
}

// running lists the started apps, oldest first: during a reload two
// configs run side by side, and the newest one is the current one.
var (
	runningMu sync.Mutex
	running   []*App
)

// currentApp returns the newest running app, or nil.
func currentApp() *App {
	runningMu.Lock()
	defer runningMu.Unlock()
	if len(running) == 0 {
		return nil
	}
	return running[len(running)-1]
}

// newestFor returns the newest running app on dir; runningMu must be held.
func newestFor(dir string) *App {
	for i := len(running) - 1; i >= 0; i-- {
		if running[i].dir == dir {
			return running[i]
		}
	}
	return nil
}

// newestAppFor is newestFor for callers not holding runningMu.
func newestAppFor(dir string) *App {
	runningMu.Lock()
	defer runningMu.Unlock()
	return newestFor(dir)
}

// pool holds one *runtime per storage directory; its references are the
// running apps on that directory.
var pool = caddy.NewUsagePool()

// runtime is what outlives a config: the open store, its dispatcher and
// the tracer provider, for one storage directory.
type runtime struct {
	dir    string
	store  *queue.Store
	engine *delivery.Engine
	tp     *tracerProvider
}

// openRuntime opens the store in a.dir and starts its engine.
func openRuntime(a *App) (*runtime, error) {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating storage directory: %w", err)
	}
	st, err := queue.Open(queue.Options{Dir: a.dir, Retention: time.Duration(a.Retention), MinFree: a.MinFree})
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	tp, err := newTracerProvider(a.logger)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	rt := &runtime{dir: a.dir, store: st, tp: tp}
	eng, err := delivery.New(st, a.cfg, delivery.Options{
		TracerProvider: tp.provider,
		Logger:         a.logger,
		Hooks:          rt.hooks(),
	})
	if err != nil {
		_ = tp.shutdown(context.Background())
		_ = st.Close()
		return nil, fmt.Errorf("starting dispatcher: %w", err)
	}
	rt.engine = eng // started by takeOver: no attempt before the config runs
	return rt, nil
}

// Destruct stops the engine (waiting for attempts in flight, flushing
// outcomes), closes the store, then flushes and stops the tracer provider.
func (rt *runtime) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if err := rt.engine.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stopping dispatcher: %w", err))
	}
	if err := rt.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing store: %w", err))
	}
	if err := rt.tp.shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shutting down tracer provider: %w", err))
	}
	return errors.Join(errs...)
}

// hooks feed metrics and Caddy events. They look up the newest app on the
// directory at call time, because the engine outlives the config that
// created it.
func (rt *runtime) hooks() delivery.Hooks {
	return delivery.Hooks{
		Attempt: func(_, outcome string, d time.Duration) {
			metrics.attempts.WithLabelValues(outcome).Inc()
			metrics.attemptDuration.Observe(d.Seconds())
		},
		Paused: func(sub queue.Subscription, lastError string) {
			if a := newestAppFor(rt.dir); a != nil {
				a.emitEvent(EventSubscriptionPaused, map[string]any{
					"subscription_id": sub.ID,
					"url":             sub.URL,
					"last_error":      lastError,
				})
			}
		},
		Activated: func(sub queue.Subscription) {
			if a := newestAppFor(rt.dir); a != nil {
				a.emitEvent(EventSubscriptionActivated, map[string]any{
					"subscription_id": sub.ID,
					"url":             sub.URL,
				})
			}
		},
	}
}

func (a *App) emitEvent(name string, data map[string]any) {
	if a.events != nil {
		a.events.Emit(a.ctx, name, data)
	}
}

// Interface guards.
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
	_ caddy.Destructor  = (*runtime)(nil)
)
