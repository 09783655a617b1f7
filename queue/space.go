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
// to what must still be written: outcomes, memtable flushes and
// compactions (a few memtables' worth with the options of badgerOptions).
// Below half of it (LowOnSpace) the dispatcher starts no attempt, whose
// outcome records and failure-log entries (up to 4 KiB of response body
// each) would go on filling the disk. Value-log GC, which frees space but
// writes the live part of a file first, takes only files whose live part
// fits in what is free (gcRatio).
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
	size   func(dir string) (int64, error) // the filesystem's size
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
	return &spaceGuard{dir: dir, min: min, statfs: statfs, size: fsSize, now: now}
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

// freeLocked returns the free space by a reading at most spaceRecheck old
// (less what was admitted since), or false when it cannot be told. Caller
// holds mu.
func (g *spaceGuard) freeLocked() (int64, bool) {
	now := g.now()
	if now.Sub(g.at) > spaceRecheck || now.Before(g.at) {
		free, err := g.statfs(g.dir)
		if err != nil {
			return 0, false
		}
		g.free, g.at = free, now
	}
	return g.free, true
}

// low reports whether less than half the minimum is free: the writes that
// are not refused (outcomes, the failure log) must stop too before the
// disk is full.
func (g *spaceGuard) low() bool {
	if g.min < 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	free, ok := g.freeLocked()
	return ok && free < g.min/2
}

// vlogFileSize is the value-log file size of badgerOptions.
const vlogFileSize = 128 << 20

// gcMargin is what a value-log GC run leaves free besides the live part of
// the file it rewrites (its index updates go through the memtables).
const gcMargin = 16 << 20

// gcRatio returns the discard ratio a value-log GC run may use now, or
// false when none fits. A run rewrites the live part of one file, at most
// (1-ratio) of it, before it deletes the file; with the disk filling up
// only files that are mostly garbage are taken, so what a run writes
// always fits in what is free (less gcMargin). Badger's usual 0.5 when
// there is room, with the check off, or when the free space is unknown.
func (g *spaceGuard) gcRatio() (float64, bool) {
	if g.min < 0 {
		return 0.5, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	free, ok := g.freeLocked()
	if !ok {
		return 0.5, true
	}
	room := free - gcMargin
	if room*20 < vlogFileSize {
		return 0, false // a file 95 % garbage is worth a run; tighter, none
	}
	return max(0.5, 1-float64(room)/vlogFileSize), true
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
	if size, err := g.size(g.dir); err == nil && g.min >= size {
		// A typo (64GB for 64MB): every emit would be refused for good.
		return fmt.Errorf("min_free %s is not less than the size of the filesystem of %s (%s): no event could ever be stored",
			humanize.IBytes(uint64(g.min)), g.dir, humanize.IBytes(uint64(size)))
	}
	return nil
}
