package queue

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
)

// DefaultMinFree is the free space the store keeps on its filesystem.
//
// Badger writes its value log, memtable logs and tables through shared
// mappings of sparse files: a write to a page the filesystem cannot give a
// block to is not an error but a SIGBUS, which kills the process. So the
// store stops accepting events while less than this is free, and leaves it
// to what must still be written: outcomes, memtable flushes, compactions
// (a few memtables' worth with the options of badgerOptions) and value-log
// GC (up to half a 128 MiB file). Below half of it (LowOnSpace) value-log
// GC stops and the dispatcher starts no attempt, whose outcome records and
// failure-log entries (up to 4 KiB of response body each) would go on
// filling the disk.
const DefaultMinFree = 64 << 20

// minFreeToOpen is what Open needs free at least: opening replays and
// writes the memtable logs.
const minFreeToOpen = 16 << 20

// spaceRecheck is how long a free-space reading is trusted, less what was
// admitted since.
const spaceRecheck = 100 * time.Millisecond

// errNoStatfs: the platform cannot tell the free space (no check is made).
var errNoStatfs = errors.New("free space unknown on this platform")

// spaceGuard admits writes while the filesystem of dir keeps min bytes
// free. Between readings it counts down what it admitted, so a burst of
// large events cannot overrun the reserve between two readings.
type spaceGuard struct {
	dir    string
	min    int64
	statfs func(dir string) (int64, error)
	now    func() time.Time

	mu   sync.Mutex
	free int64     // at the last reading, less what was admitted since
	at   time.Time // of the last reading
}

func newSpaceGuard(dir string, min int64, statfs func(string) (int64, error), now func() time.Time) *spaceGuard {
	if min == 0 {
		min = DefaultMinFree
	}
	if statfs == nil {
		statfs = freeSpace
	}
	return &spaceGuard{dir: dir, min: min, statfs: statfs, now: now}
}

// admit reserves n bytes for a write, or refuses with ErrUnavailable when
// that would leave less than the minimum free.
func (g *spaceGuard) admit(n int64) error {
	if g.min < 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if now.Sub(g.at) > spaceRecheck || now.Before(g.at) || g.free-n < g.min {
		free, err := g.statfs(g.dir)
		if err != nil {
			return nil // cannot tell: Badger's own errors stay the guard
		}
		g.free, g.at = free, now
	}
	if g.free-n < g.min {
		return fmt.Errorf("%w: %w: %s free in %s, and the store keeps %s free (min_free)",
			ErrUnavailable, ErrFull, humanize.IBytes(uint64(max(g.free, 0))), g.dir, humanize.IBytes(uint64(g.min)))
	}
	g.free -= n
	return nil
}

// low reports whether less than half the minimum is free (by a reading at
// most spaceRecheck old): the writes that are not refused (outcomes, the
// failure log, value-log GC) must stop too before the disk is full.
func (g *spaceGuard) low() bool {
	if g.min < 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if now.Sub(g.at) > spaceRecheck || now.Before(g.at) {
		free, err := g.statfs(g.dir)
		if err != nil {
			return false
		}
		g.free, g.at = free, now
	}
	return g.free < g.min/2
}

// checkOpen refuses to open a store with almost no space left, where
// Badger's first writes would fault.
func (g *spaceGuard) checkOpen() error {
	if g.min < 0 {
		return nil
	}
	free, err := g.statfs(g.dir)
	if err != nil {
		return nil
	}
	if need := min(g.min, minFreeToOpen); free < need {
		return fmt.Errorf("%w: %w: %s free in %s; opening the store needs %s",
			ErrUnavailable, ErrFull, humanize.IBytes(uint64(max(free, 0))), g.dir, humanize.IBytes(uint64(need)))
	}
	return nil
}
