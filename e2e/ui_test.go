package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

// uiWait bounds every wait for the page: it refreshes itself every 3 s and
// the test schedule retries every 20 ms, so this is generous.
const uiWait = 20 * time.Second

// The Manage Webhooks page (DESIGN.md "Manage Webhooks page") in Debian's
// Chromium against the real sidecar: subscribe a local subscriber through
// the form and read the secret from the page; make the subscriber fail until
// its row shows paused; see the failures in the Failure Log; Test it; switch
// the subscriber to 200 and Activate, and the held events arrive signed with
// the secret the page showed. Every call the page makes goes through Caddy's
// admin endpoint and its Origin checks, as a user's browser would.
func TestManageWebhooksPage(t *testing.T) {
	chrome := uiChromeBinary(t)
	shots := uiArtifactsDir(t)

	cfg := NewConfig(t)
	c := Start(t, Options{
		Caddyfile: uiBrowserCaddyfile(cfg),
		AdminAddr: fmt.Sprintf("127.0.0.1:%d", cfg.AdminPort),
		SiteAddr:  fmt.Sprintf("127.0.0.1:%d", cfg.SitePort),
	})
	admin := c.Admin()
	hook := NewSubscriber(t)
	const downBody = `{"error":"crm database is down"}`
	hook.Respond(Response{Status: http.StatusInternalServerError, Body: downBody})

	b := uiOpenBrowser(t, chrome)
	b.do("open the page", chromedp.Navigate(c.AdminURL()+"/webhooks/ui/"))
	b.wait("the catalog's event types as checkboxes", `!!document.querySelector('[data-testid="subscribe-event-lead.created"]')`)
	b.wait("the page's first refresh", `document.querySelector('[data-testid="refresh"]').dataset.loaded === 'true'`)

	// A URL the API refuses: its message is shown, not swallowed.
	b.do("subscribe with an ftp URL",
		chromedp.SendKeys(uiSel("subscribe-url"), "ftp://127.0.0.1/hooks"),
		chromedp.Click(uiSel("subscribe-event-lead.created")),
		chromedp.Click(uiSel("subscribe-submit")),
	)
	b.wait("the error banner with the API's 400", `(() => {
		const e = document.querySelector('[data-testid="error-banner"]');
		return !e.hidden && e.textContent.includes('400');
	})()`)

	// Subscribe for real; the secret is shown once, with a Copy button.
	b.eval("clear the URL field", `document.querySelector('[data-testid="subscribe-url"]').value = ''`)
	b.do("subscribe the local subscriber",
		chromedp.SendKeys(uiSel("subscribe-url"), hook.URL+"/hooks/crm"),
		chromedp.SendKeys(uiSel("subscribe-description"), "CRM (browser test)"),
		chromedp.Click(uiSel("subscribe-submit")),
	)
	b.wait("the new secret", `document.querySelector('[data-testid="new-secret"]').textContent.startsWith('whsec_')`)
	secret := b.text("new-secret")
	id := b.text("new-subscription-id")
	if !strings.HasPrefix(id, "sub_") {
		t.Fatalf("page shows new subscription id %q, want sub_…", id)
	}
	if b.visible("error-banner") {
		t.Errorf("error banner still shown after a successful subscribe: %q", b.text("error-banner"))
	}
	got := admin.Subscription(t, id)
	if got.URL != hook.URL+"/hooks/crm" || !slices.Equal(got.Events, []string{"lead.created"}) || got.Description != "CRM (browser test)" {
		t.Fatalf("the form created %+v, want url %s/hooks/crm, events [lead.created], the description", got, hook.URL)
	}
	b.do("copy the secret", chromedp.Click(uiSel("btn-copy-secret")))
	b.wait("the copy feedback", `document.getElementById('copy-status').textContent !== ''`)
	b.wait("the new row", uiTextIs("sub-state-"+id, "active"))

	// A second subscription, created through the API, whose receiver is not
	// even listening: its failures are errors without a status.
	dead := admin.Subscribe(t, Subscribe{URL: DeadURL(t), Events: []string{"email.opened"}, Description: "nobody listens"})
	c.Emit(t, "email.opened", map[string]any{"email": "ada@example.com"})

	// Emit until the row shows paused: with pause_after 10 and retries every
	// 20 ms, the first event's own retries should get it there.
	var held []string
	for i := 0; i < 10; i++ {
		held = append(held, c.Emit(t, "lead.created", map[string]any{"n": i, "name": "Ada"}).ID)
		if b.poll(uiTextIs("sub-state-"+id, "paused"), 5*time.Second) {
			break
		}
	}
	b.wait("the row paused", uiTextIs("sub-state-"+id, "paused"))
	b.wait("10 consecutive failures", uiTextIs("sub-failures-"+id, "10"))
	b.wait("the Activate button on the paused row", `!!document.querySelector('[data-testid="btn-activate-`+id+`"]')`)
	if b.text("sub-last-error-"+id) == "—" {
		t.Error("paused row shows no last error")
	}
	// Events emitted while paused are held, not dropped.
	for i := 0; i < 2; i++ {
		held = append(held, c.Emit(t, "lead.created", map[string]any{"n": 100 + i, "while": "paused"}).ID)
	}
	b.wait(fmt.Sprintf("%d pending deliveries on the row", len(held)), uiTextIs("sub-pending-"+id, strconv.Itoa(len(held))))
	b.wait("the dead subscription paused too", uiTextIs("sub-state-"+dead.ID, "paused"))

	// Test: the result inline; it changes neither the count nor the state.
	// The press is held across refreshes that bring a change to the row: the
	// page redraws only after the release, so the button under the pointer
	// is still the one pressed and the click is not lost.
	before := hook.Count()
	shown := b.text("last-refresh")
	b.wait("a refresh", uiRefreshedSince(shown)) // the next one starts 3 s later, after the change
	admin.Patch(t, "/webhooks/subscriptions/"+id, map[string]any{"description": "CRM (renamed while pressed)"})
	at, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]float64](`(() => {
		const e = document.querySelector('[data-testid="btn-test-`+id+`"]');
		e.scrollIntoView({ block: 'center' });
		e.pressedInTest = true;
		const r = e.getBoundingClientRect();
		return [r.x + r.width / 2, r.y + r.height / 2];
	})()`))
	if err != nil || len(at) != 2 {
		t.Fatalf("locate the Test button: %v %v", at, err)
	}
	b.do("press Test", chromedp.MouseEvent(chromedp.MousePressed, at[0], at[1], chromedp.ButtonLeft, uiClickCount))
	shown = b.text("last-refresh")
	b.wait("a refresh while pressed", uiRefreshedSince(shown))
	if !b.poll(`document.querySelector('[data-testid="btn-test-`+id+`"]').pressedInTest === true`, time.Second) {
		t.Error("a refresh redrew the row while its Test button was pressed")
	}
	b.do("release Test", chromedp.MouseEvent(chromedp.MouseReleased, at[0], at[1], chromedp.ButtonLeft, uiClickCount))
	b.wait("the test result", `!!document.querySelector('[data-testid="test-status-`+id+`"]')`)
	if s := b.text("test-status-" + id); s != "HTTP 500" {
		t.Errorf("test result status %q, want HTTP 500", s)
	}
	if s := b.text("test-body-" + id); s != downBody {
		t.Errorf("test result body %q, want %q", s, downBody)
	}
	if s := b.text("test-duration-" + id); !regexp.MustCompile(`^in [0-9.]+ ms$`).MatchString(strings.TrimSpace(s)) {
		t.Errorf("test result time %q, want in <n> ms", s)
	}
	reqs := hook.WaitFor(before+1, uiWait)
	if len(reqs) <= before {
		t.Fatal("the test send did not reach the subscriber")
	}
	testReq := reqs[before]
	if err := VerifySignature(secret, testReq.Header, testReq.Body); err != nil {
		t.Errorf("test send does not verify with the secret the page showed: %v", err)
	}
	if !strings.Contains(string(testReq.Body), `"webhook.test"`) {
		t.Errorf("test send body %s, want type webhook.test", testReq.Body)
	}
	if s := admin.Subscription(t, id); s.State != "paused" || s.ConsecutiveFailures != 10 {
		t.Errorf("after Test: state %s with %d failures, want still paused with 10", s.State, s.ConsecutiveFailures)
	}
	b.wait("the new description after the release", `document.querySelector('[data-testid="sub-row-`+id+`"] .desc')?.textContent === 'CRM (renamed while pressed)'`)
	b.screenshot(shots, "manage-webhooks.png")

	// The Failure Log, newest first, in local time (the browser is put in
	// India's time zone, UTC+5:30, so UTC cannot pass for it).
	b.do("open the Failure Log", chromedp.Click(uiSel("tab-failures")))
	b.wait("10 failures of the subscription and the dead one's", `(() => {
		const rows = [...document.querySelectorAll('[data-testid="failure-row"]')];
		return rows.filter(r => r.dataset.subscription === '`+id+`').length >= 10 &&
			rows.some(r => r.dataset.subscription === '`+dead.ID+`');
	})()`)
	b.screenshot(shots, "failure-log.png")
	rows := b.failureRows()
	ist := time.FixedZone("IST", 5*3600+1800)
	traceRe := regexp.MustCompile(`^[0-9a-f]{32}$`)
	var prev time.Time
	for i, r := range rows {
		at, err := time.Parse(time.RFC3339Nano, r.Time)
		if err != nil {
			t.Fatalf("row %d: time %q: %v", i, r.Time, err)
		}
		if i > 0 && at.After(prev) {
			t.Errorf("row %d (%s) is newer than the row above it (%s): want newest first", i, at, prev)
		}
		prev = at
		local := at.In(ist)
		if !strings.Contains(r.Shown, local.Format("Jan 2, 2006")) || !strings.Contains(r.Shown, local.Format("03:04:05")) {
			t.Errorf("row %d shows time %q, want the local time %s", i, r.Shown, local.Format("Jan 2, 2006 03:04:05 PM"))
		}
		if !traceRe.MatchString(r.Trace) {
			t.Errorf("row %d: trace id %q, want 32 hex digits", i, r.Trace)
		}
		switch r.Subscription {
		case id:
			if r.Status != "HTTP 500" || r.Body != downBody || r.EventType != "lead.created" {
				t.Errorf("row %d: %+v, want HTTP 500 with body %s for lead.created", i, r, downBody)
			}
		case dead.ID:
			if r.Status != "" || !strings.Contains(r.Error, "refused") || r.EventType != "email.opened" {
				t.Errorf("row %d: %+v, want a connection refused error without status for email.opened", i, r)
			}
		}
	}
	attempts := map[string]bool{}
	for _, r := range rows {
		if r.Subscription == id {
			attempts[r.Attempt] = true
		}
	}
	for n := 1; n <= 10; n++ {
		if !attempts[strconv.Itoa(n)] {
			t.Errorf("no failure-log row for attempt %d of %s", n, id)
		}
	}

	// Filter by subscription.
	b.eval("filter the log by the subscription", `(() => {
		const f = document.querySelector('[data-testid="failure-filter"]');
		f.value = '`+dead.ID+`';
		f.dispatchEvent(new Event('change'));
		return f.value;
	})()`)
	b.wait("only the dead subscription's rows", `(() => {
		const rows = [...document.querySelectorAll('[data-testid="failure-row"]')];
		return rows.length > 0 && rows.every(r => r.dataset.subscription === '`+dead.ID+`');
	})()`)

	// Activate after the receiver recovered: the row goes active and the held
	// events arrive, signed with the secret the page showed.
	hook.Respond(Response{Status: http.StatusOK, Body: "ok"})
	before = hook.Count()
	b.do("back to the subscriptions, click Activate",
		chromedp.Click(uiSel("tab-subscriptions")),
		chromedp.Click(uiSel("btn-activate-"+id)),
	)
	b.wait("the row active", uiTextIs("sub-state-"+id, "active"))
	b.wait("the failure count reset", uiTextIs("sub-failures-"+id, "0"))
	arrived, ok := hook.WaitUntil(uiWait, func(rs []Request) bool {
		return uiHasAll(rs[min(before, len(rs)):], held)
	})
	if !ok {
		var ids []string
		for _, r := range arrived[min(before, len(arrived)):] {
			ids = append(ids, r.ID())
		}
		t.Fatalf("after Activate the subscriber got %v, want the held %v", ids, held)
	}
	for _, r := range arrived[before:] {
		if err := VerifySignature(secret, r.Header, r.Body); err != nil {
			t.Errorf("delivery %s does not verify with the secret the page showed: %v", r.ID(), err)
		}
		var env struct {
			ID   string          `json:"id"`
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(r.Body, &env); err != nil || env.ID != r.ID() || env.Type != "lead.created" || len(env.Data) == 0 {
			t.Errorf("delivery body %s: want the envelope of a lead.created with id %s", r.Body, r.ID())
		}
	}
	b.wait("nothing pending", uiTextIs("sub-pending-"+id, "0"))

	// Pause by hand: the row offers Activate again.
	b.do("click Pause", chromedp.Click(uiSel("btn-pause-"+id)))
	b.wait("the row paused by hand", uiTextIs("sub-state-"+id, "paused"))
	b.wait("Activate offered again", `!!document.querySelector('[data-testid="btn-activate-`+id+`"]')`)
	if s := admin.Subscription(t, id); s.State != "paused" {
		t.Errorf("after Pause the API says %s, want paused", s.State)
	}

	// Unsubscribe asks first; Cancel keeps the subscription.
	b.do("Unsubscribe, then Cancel",
		chromedp.Click(uiSel("btn-unsubscribe-"+dead.ID)),
		chromedp.WaitVisible(uiSel("confirm-no")),
		chromedp.Click(uiSel("confirm-no")),
	)
	b.wait("the dialog closed", `!document.querySelector('[data-testid="confirm-dialog"]').open`)
	if r := admin.Get(t, "/webhooks/subscriptions/"+dead.ID); r.Status != http.StatusOK {
		t.Fatalf("after Cancel the subscription is gone: %s", r)
	}
	// Cancel and Unsubscribe again at once, as a quick user might: the
	// first dialog's close event can arrive after the second one opened
	// (Chromium fires it with a later frame, late on a busy machine). It
	// answers the first question only; the second waits for its own click.
	b.do("Unsubscribe again",
		chromedp.Click(uiSel("btn-unsubscribe-"+dead.ID)),
		chromedp.WaitVisible(uiSel("confirm-no")),
	)
	b.eval("Cancel and Unsubscribe again in one go", `(() => {
		document.querySelector('[data-testid="confirm-no"]').click();
		document.querySelector('[data-testid="btn-unsubscribe-`+dead.ID+`"]').click();
		return document.querySelector('[data-testid="confirm-dialog"]').open;
	})()`)
	b.do("confirm",
		chromedp.WaitVisible(uiSel("confirm-yes")),
		chromedp.Click(uiSel("confirm-yes")),
	)
	b.wait("the row gone", `!document.querySelector('[data-testid="sub-row-`+dead.ID+`"]')`)
	if r := admin.Get(t, "/webhooks/subscriptions/"+dead.ID); r.Status != http.StatusNotFound {
		t.Errorf("after Unsubscribe: GET the subscription answers %s, want 404", r)
	}
	if b.visible("error-banner") {
		t.Errorf("error banner at the end: %q", b.text("error-banner"))
	}
	b.checkConsole()
}

// uiRefreshedSince is a predicate: the page's "Updated <time>" line is no
// longer shown (it changes with every completed refresh, 3 s apart).
func uiRefreshedSince(shown string) string {
	return `document.querySelector('[data-testid="last-refresh"]').textContent.trim() !== ` + strconv.Quote(shown)
}

// uiClickCount makes a pressed or released mouse event part of one click.
func uiClickCount(p *input.DispatchMouseEventParams) { p.ClickCount = 1 }

// uiBrowserCaddyfile is cfg's Caddyfile with the admin origins a browser
// needs. Caddy's admin endpoint checks requests that carry Sec-Fetch-Mode
// (every request from a browser) against its allowed origins, using the
// Referer when there is no Origin; a typed-in URL has neither, so a plain
// navigation to the page is refused unless the empty origin is allowed.
// The page's own requests carry the admin origin and pass the check.
func uiBrowserCaddyfile(cfg Config) string {
	line := fmt.Sprintf("admin 127.0.0.1:%d\n", cfg.AdminPort)
	block := fmt.Sprintf("admin 127.0.0.1:%d {\n\t\torigins 127.0.0.1:%[1]d localhost:%[1]d \"\"\n\t}\n", cfg.AdminPort)
	return strings.Replace(cfg.Caddyfile(), line, block, 1)
}

// uiChromeBinary is $CHROME_BIN or /usr/bin/chromium. Without CHROME_BIN
// and without Chromium the test is skipped; .ci/run sets CHROME_BIN and
// installs Chromium, so CI never skips.
func uiChromeBinary(t *testing.T) string {
	t.Helper()
	bin, set := os.LookupEnv("CHROME_BIN")
	if !set || bin == "" {
		bin = "/usr/bin/chromium"
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		if set {
			t.Fatalf("CHROME_BIN=%s is not an executable", bin)
		}
		t.Skipf("no Chromium at %s (set CHROME_BIN, or apt-get install chromium)", bin)
	}
	return bin
}

// uiArtifactsDir is where screenshots go: $ARTIFACTS_DIR/ui, or a new
// temporary directory that outlives the test so a reviewer can open them.
func uiArtifactsDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("ARTIFACTS_DIR"); dir != "" {
		dir = filepath.Join(dir, "ui")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("create artifacts dir: %v", err)
		}
		return dir
	}
	dir, err := os.MkdirTemp("", "caddy-webhooks-ui-")
	if err != nil {
		t.Fatalf("create artifacts dir: %v", err)
	}
	return dir
}

// uiSel selects the element with a data-testid.
func uiSel(testid string) chromedp.CSS {
	return chromedp.CSS(fmt.Sprintf(`[data-testid=%q]`, testid))
}

// uiTextIs is a JS predicate: the element with testid exists and its
// trimmed text is want.
func uiTextIs(testid, want string) string {
	return fmt.Sprintf(`(document.querySelector('[data-testid=%q]')?.textContent ?? '').trim() === %q`, testid, want)
}

// uiHasAll reports whether reqs hold a request with each webhook-id of ids.
func uiHasAll(reqs []Request, ids []string) bool {
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[r.ID()] = true
	}
	for _, id := range ids {
		if !seen[id] {
			return false
		}
	}
	return true
}

// uiBrowser is one headless Chromium tab and what its console said.
type uiBrowser struct {
	t   *testing.T
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

func uiOpenBrowser(t *testing.T, chrome string) *uiBrowser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 4*time.Minute)
	b := &uiBrowser{t: t, ctx: ctx}

	// The console first, so nothing the page says is missed.
	var wg sync.WaitGroup
	msgs := chromedp.Console(ctx)
	wg.Go(func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		cancelTime()
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("close the browser: %v", err)
		}
		cancelTab()
		cancelAlloc()
		wg.Wait()
	})

	// A fixed zone far from UTC and a fixed locale, so the test can tell
	// local time from UTC on any machine.
	b.do("set time zone and locale", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Kolkata"}); err != nil {
			return fmt.Errorf("time zone override: %w", err)
		}
		if _, err := cdp.Call(ctx, tg, emulation.SetLocaleOverride, emulation.SetLocaleOverrideParams{Locale: "en_US"}); err != nil {
			return fmt.Errorf("locale override: %w", err)
		}
		return nil
	}))
	return b
}

// do runs actions and fails the test with what was being done.
func (b *uiBrowser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v%s", what, err, b.diagnose())
	}
}

// eval evaluates a JS expression for its effect (as a user's selection
// would have), failing the test if it throws.
func (b *uiBrowser) eval(what, expr string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[any](expr)); err != nil {
		b.t.Fatalf("%s: %v%s", what, err, b.diagnose())
	}
}

// poll waits until the JS predicate holds, re-evaluating it on every change
// of the page, for at most timeout; it reports whether it held.
func (b *uiBrowser) poll(predicate string, timeout time.Duration) bool {
	b.t.Helper()
	ok, err := chromedp.Run(b.ctx, chromedp.Poll[bool](predicate,
		chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(timeout)))
	if err != nil && !errors.Is(err, chromedp.ErrPollingTimeout) {
		b.t.Fatalf("evaluate %s: %v", predicate, err)
	}
	return err == nil && ok
}

// wait is poll with uiWait that fails the test, saying what it waited for.
func (b *uiBrowser) wait(what, predicate string) {
	b.t.Helper()
	if !b.poll(predicate, uiWait) {
		b.t.Fatalf("waited %s for %s; it did not happen%s", uiWait, what, b.diagnose())
	}
}

// text is the trimmed text content of the element with testid.
func (b *uiBrowser) text(testid string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
		fmt.Sprintf(`(document.querySelector('[data-testid=%q]')?.textContent ?? '').trim()`, testid)))
	if err != nil {
		b.t.Fatalf("read %s: %v", testid, err)
	}
	return s
}

// visible reports whether the element with testid is shown.
func (b *uiBrowser) visible(testid string) bool {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](
		fmt.Sprintf(`(() => { const e = document.querySelector('[data-testid=%q]'); return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0; })()`, testid)))
	if err != nil {
		b.t.Fatalf("check %s: %v", testid, err)
	}
	return v
}

// uiFailureRow is what one row of the Failure Log shows.
type uiFailureRow struct {
	Subscription, Event, EventType, Attempt string
	Time, Shown                             string // the entry's RFC 3339 time, and the text shown
	Status, Body, Error, Trace              string
}

func (b *uiBrowser) failureRows() []uiFailureRow {
	b.t.Helper()
	rows, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]uiFailureRow](`[...document.querySelectorAll('[data-testid="failure-row"]')].map(r => {
		const q = (id) => (r.querySelector('[data-testid="' + id + '"]')?.textContent ?? '').trim();
		return {
			Subscription: r.dataset.subscription, Event: r.dataset.event,
			EventType: q('failure-event-type'), Attempt: q('failure-attempt'),
			Time: r.querySelector('[data-testid="failure-time"]').getAttribute('datetime'), Shown: q('failure-time'),
			Status: q('failure-status'), Body: q('failure-body'), Error: q('failure-error'), Trace: q('failure-trace'),
		};
	})`))
	if err != nil {
		b.t.Fatalf("read the failure log: %v", err)
	}
	return rows
}

// screenshot writes a PNG of the whole page into dir and prints its path.
func (b *uiBrowser) screenshot(dir, name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatalf("write screenshot: %v", err)
	}
	b.t.Logf("screenshot: %s", path)
	fmt.Printf("e2e: screenshot %s\n", path)
}

// checkConsole fails the test for uncaught exceptions and console errors,
// such as CSP violations or a resource the admin endpoint refused. The
// browser's own line for the API's deliberate 400 is expected, once.
func (b *uiBrowser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	expected := 0
	for _, m := range b.console {
		if m.Type == chromedp.ConsoleError && strings.Contains(m.Text, "status of 400") && strings.HasSuffix(m.URL, "/webhooks/subscriptions") && expected == 0 {
			expected++
			continue
		}
		if m.IsException() || m.Type == chromedp.ConsoleError {
			b.t.Errorf("browser console: %s (%s)", m, m.URL)
		}
	}
}

// diagnose describes the page for a failure message: the error banner,
// the subscription rows and the console.
func (b *uiBrowser) diagnose() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const banner = document.querySelector('[data-testid="error-banner"]');
		const rows = [...document.querySelectorAll('#subscriptions-body tr')].map(r => r.innerText.replace(/\s+/g, ' ').trim());
		const dialog = document.querySelector('[data-testid="confirm-dialog"]');
		return 'location: ' + location.href + '\nerror banner: ' + (banner && !banner.hidden ? banner.innerText : '(none)') +
			'\nconfirm dialog: ' + (dialog && dialog.open ? 'open: ' + dialog.innerText.replace(/\s+/g, ' ') : 'closed') +
			'\nrows:\n  ' + rows.join('\n  ');
	})()`))
	if err != nil {
		s = "(page not readable: " + err.Error() + ")"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var con strings.Builder
	for _, m := range b.console {
		con.WriteString("\n  " + m.String())
	}
	return "\n" + s + "\nconsole:" + con.String()
}
