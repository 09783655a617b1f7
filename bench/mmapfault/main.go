// Command mmapfault reproduces the stall behind the emit→delivery tail that
// bench/PROFILES.md describes: it appends 1.1 KiB records to a 512 MiB
// shared file mapping the way Badger writes its value log (copy, then
// msync every 64 records) and prints every copy that took over 10 ms, with
// the system time the thread spent in it. With -random the mapping is first
// advised MADV_RANDOM, as queue/advise_linux.go does for Badger's files.
//
//	go run ./bench/mmapfault [-random] [-dir DIR]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	random := flag.Bool("random", false, "madvise(MADV_RANDOM) the mapping first")
	dir := flag.String("dir", "", "directory of the temp file (default $TMPDIR)")
	flag.Parse()
	runtime.LockOSThread() // RUSAGE_THREAD below is this thread

	f, err := os.CreateTemp(*dir, "mmapfault-")
	if err != nil {
		fail(err)
	}
	defer os.Remove(f.Name())
	const size = 512 << 20
	if err := f.Truncate(size); err != nil {
		fail(err)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		fail(err)
	}
	if *random {
		if err := syscall.Madvise(data, syscall.MADV_RANDOM); err != nil {
			fail(err)
		}
	}
	rec := make([]byte, 1100)
	var worst time.Duration
	slow := 0
	start := time.Now()
	for i, off := 0, 0; off+len(rec) <= size; i, off = i+1, off+len(rec) {
		var r0, r1 syscall.Rusage
		_ = syscall.Getrusage(1, &r0) // RUSAGE_THREAD
		t := time.Now()
		copy(data[off:], rec)
		d := time.Since(t)
		_ = syscall.Getrusage(1, &r1)
		worst = max(worst, d)
		if d > 10*time.Millisecond {
			slow++
			sys := time.Duration(syscall.TimevalToNsec(r1.Stime) - syscall.TimevalToNsec(r0.Stime))
			fmt.Printf("copy at offset %d MiB took %v (system time %v, minor faults %d)\n", off>>20, d.Round(time.Microsecond), sys, r1.Minflt-r0.Minflt)
		}
		if i%64 == 63 {
			if _, _, e := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&data[0])), size, syscall.MS_SYNC); e != 0 {
				fail(e)
			}
		}
	}
	fmt.Printf("random=%v: %d copies over 10 ms, slowest %v, total %v\n", *random, slow, worst.Round(time.Microsecond), time.Since(start).Round(time.Millisecond))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mmapfault:", err)
	os.Exit(1)
}
