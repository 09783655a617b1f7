package caddymodule

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-webhooks/caddy-webhooks/queue"
)

const metricsNamespace = "caddy_webhooks"

// metrics are process-wide so counters keep counting across reloads; each
// config registers them in its own registry (Caddy's admin /metrics).
var metrics = struct {
	accepted        *prometheus.CounterVec
	attempts        *prometheus.CounterVec
	attemptDuration prometheus.Histogram
}{
	accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "events_accepted_total",
		Help:      "Events accepted (stored durably) by the emit endpoint, by type.",
	}, []string{"type"}),
	attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "attempts_total",
		Help:      "Delivery attempts by outcome: success, failure (non-2xx) or error (no response).",
	}, []string{"outcome"}),
	attemptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "attempt_duration_seconds",
		Help:      "Duration of delivery attempts.",
		Buckets:   prometheus.DefBuckets,
	}),
}

// maxCachedCounters bounds acceptedCounters. Types come from catalogs, so
// the bound is only reached by configs cycling through very many types;
// past it counters are looked up by label every time.
const maxCachedCounters = 1024

var (
	// acceptedCounters caches metrics.accepted's counter per event type,
	// sparing the emit path a label hash and lookup.
	acceptedCounters sync.Map // type name -> prometheus.Counter
	acceptedCached   atomic.Int64
)

// acceptedCounter returns the events-accepted counter of an event type.
func acceptedCounter(typ string) prometheus.Counter {
	if c, ok := acceptedCounters.Load(typ); ok {
		return c.(prometheus.Counter)
	}
	c := metrics.accepted.WithLabelValues(typ)
	if acceptedCached.Add(1) <= maxCachedCounters {
		acceptedCounters.Store(typ, c)
	}
	return c
}

var (
	deliveriesDesc = prometheus.NewDesc(metricsNamespace+"_deliveries",
		"Deliveries by state.", []string{"state"}, nil)
	subscriptionsDesc = prometheus.NewDesc(metricsNamespace+"_subscriptions",
		"Subscriptions by state.", []string{"state"}, nil)
)

var (
	deliveryStates     = []string{queue.DeliveryPending, queue.DeliveryScheduled, queue.DeliveryHeld, queue.DeliveryDelivered, queue.DeliveryFailed}
	subscriptionStates = []string{queue.StateActive, queue.StatePaused}
)

// stateCollector reports the gauges from the store's counts at scrape
// time, for the app that registered it (nothing while it is not running).
type stateCollector struct{ app *App }

// Describe implements prometheus.Collector.
func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- deliveriesDesc
	ch <- subscriptionsDesc
}

// Collect implements prometheus.Collector.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	rt := c.app.rt.Load()
	if rt == nil {
		return
	}
	st := rt.store.Stats()
	for _, s := range deliveryStates {
		ch <- prometheus.MustNewConstMetric(deliveriesDesc, prometheus.GaugeValue, float64(st.Deliveries[s]), s)
	}
	for _, s := range subscriptionStates {
		ch <- prometheus.MustNewConstMetric(subscriptionsDesc, prometheus.GaugeValue, float64(st.Subscriptions[s]), s)
	}
}

// registerMetrics registers the collectors in a config's registry,
// tolerating ones already there.
func registerMetrics(reg *prometheus.Registry, a *App) error {
	// Every outcome has a series from the start, so a scrape before the
	// first attempt (or a rate over the first failures) sees 0, not nothing.
	for _, o := range []string{"success", "failure", "error"} {
		metrics.attempts.WithLabelValues(o)
	}
	// So does every event type this config accepts.
	for _, typ := range a.catalog.emittable() {
		acceptedCounter(typ)
	}
	for _, c := range []prometheus.Collector{metrics.accepted, metrics.attempts, metrics.attemptDuration, stateCollector{app: a}} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
