package queue

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

const adviseSupported = true

// scan marks every mapping of a .vlog or .mem file of the directory
// MADV_RANDOM, once. A range that was unmapped meanwhile fails harmlessly;
// one that was reused for another mapping gets a hint that changes no data.
func (a *advisor) scan() {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	prefix := []byte(a.dir + "/")
	live := make(map[mapping]bool, len(a.seen))
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		i := bytes.Index(line, prefix)
		if i < 0 {
			continue
		}
		path := line[i:]
		if !bytes.HasSuffix(path, []byte(".vlog")) && !bytes.HasSuffix(path, []byte(".mem")) {
			continue
		}
		m, ok := parseRange(line)
		if !ok {
			continue
		}
		live[m] = true
		if a.seen[m] {
			continue
		}
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, syscall.MADV_RANDOM)
	}
	a.seen = live
}

// parseRange reads "start-end" at the beginning of a maps line.
func parseRange(line []byte) (mapping, bool) {
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return mapping{}, false
	}
	lo, hi, ok := strings.Cut(string(line[:sp]), "-")
	if !ok {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || end <= start {
		return mapping{}, false
	}
	return mapping{uintptr(start), uintptr(end)}, true
}
