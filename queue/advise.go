package queue

import (
	"os"
	"path/filepath"
	"time"
)

// advisor keeps Badger's append-only files (value log, memtable WALs) out of
// the kernel's read-around. Badger writes them through shared file mappings,
// so the first write to each page faults, and for a page not yet in the page
// cache the kernel reads around it: a whole readahead window (8 MiB on the
// CI machines) of a file hole is zero-filled inside that one fault. On a VM
// whose fresh pages are slow to touch, that is a 100–170 ms stall of the
// commit in progress every 8 MiB written, which was the whole p99 of
// emit→delivery at 1k/s. Marked MADV_RANDOM, a fault fills one page.
//
// Badger maps its files itself, so the advisor finds the mappings in
// /proc/self/maps after the directory changed (a file was created), which it
// checks when the writer kicks it after a commit. A new file's first window
// is written before the advisor sees it; the rest of it is not.
type advisor struct {
	dir  string
	kick chan struct{}
	sync chan chan struct{} // tests: check now, then answer
	stop chan struct{}
	done chan struct{}

	lastScan time.Time // start of the last scan
	seen     map[mapping]bool
}

// The directory's mtime has the kernel's coarse clock granularity (a few
// ms): a file created in the same tick as the last scan leaves it unchanged.
// So a change that recent keeps the advisor scanning, at most once every
// scanEvery, until the scans are well past it.
const (
	mtimeSlack = 20 * time.Millisecond
	scanEvery  = 2 * time.Millisecond
)

// mapping is one advised range.
type mapping struct{ start, end uintptr }

func startAdvisor(dir string) *advisor {
	// /proc/self/maps names files by their resolved path.
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	a := &advisor{
		dir:  filepath.Clean(abs),
		kick: make(chan struct{}, 1),
		sync: make(chan chan struct{}),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		seen: map[mapping]bool{},
	}
	if !adviseSupported {
		close(a.done)
		return a
	}
	a.check()
	go a.run()
	return a
}

// poke asks for a check without waiting for it.
func (a *advisor) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// checkNow scans and waits for it (tests).
func (a *advisor) checkNow() {
	if !adviseSupported {
		return
	}
	reply := make(chan struct{})
	a.sync <- reply
	<-reply
}

func (a *advisor) close() {
	if adviseSupported {
		close(a.stop)
	}
	<-a.done
}

func (a *advisor) run() {
	defer close(a.done)
	for {
		select {
		case <-a.stop:
			return
		case <-a.kick:
			a.check()
		case reply := <-a.sync:
			a.lastScan = time.Now()
			a.scan()
			close(reply)
		}
	}
}

// check advises the new mappings if the directory may have changed since
// the last scan.
func (a *advisor) check() {
	now := time.Now()
	if now.Sub(a.lastScan) < scanEvery {
		return
	}
	fi, err := os.Stat(a.dir)
	if err != nil || fi.ModTime().Before(a.lastScan.Add(-mtimeSlack)) {
		return
	}
	a.lastScan = now
	a.scan()
}
