package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/<pid>/stat CPU times (USER_HZ, 100 on
// every Linux this runs on).
const clockTick = 10 * time.Millisecond

// procCPU is the user+system CPU time a process has used, 0 if unknown.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+st) * clockTick
}

// cpuSample is the CPU time used so far by each process of the run and by
// the whole machine.
type cpuSample struct {
	at                         time.Time
	sidecar, harness, receiver time.Duration
	machine                    cpuTimes
}

func (h *harness) sampleCPU() cpuSample {
	s := cpuSample{at: time.Now(), harness: procCPU(os.Getpid()), machine: readCPUTimes()}
	if h.car != nil {
		s.sidecar = procCPU(h.car.Pid)
	}
	if h.sub != nil && h.sub.cmd != nil && h.sub.cmd.Process != nil {
		s.receiver = procCPU(h.sub.cmd.Process.Pid)
	}
	return s
}

// cpuUse is where the CPU went during a phase: each process's CPU per
// operation and the share of the machine left idle.
type cpuUse struct {
	Ops                        int64
	Sidecar, Harness, Receiver time.Duration // per operation
	Idle                       float64       // share of all CPUs' time idle or waiting for I/O, -1 unknown
}

// since is the use from s0 to s over ops operations.
func (s cpuSample) since(s0 cpuSample, ops int64) cpuUse {
	u := cpuUse{Ops: ops, Idle: -1}
	if ops <= 0 {
		return u
	}
	u.Sidecar = (s.sidecar - s0.sidecar) / time.Duration(ops)
	u.Harness = (s.harness - s0.harness) / time.Duration(ops)
	u.Receiver = (s.receiver - s0.receiver) / time.Duration(ops)
	if d := s.machine.total - s0.machine.total; d > 0 && s0.machine.total > 0 {
		u.Idle = float64(s.machine.idle-s0.machine.idle) / float64(d)
	}
	return u
}

// String is "sidecar 41 µs, harness 20 µs, subscriber 12 µs per op; idle 3 %".
func (u cpuUse) String() string {
	if u.Ops <= 0 {
		return "not measured"
	}
	idle := "unknown"
	if u.Idle >= 0 {
		idle = fmt.Sprintf("%.0f %%", 100*u.Idle)
	}
	return fmt.Sprintf("sidecar %s, harness %s, subscriber %s of CPU per operation; machine idle %s",
		us(u.Sidecar), us(u.Harness), us(u.Receiver), idle)
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
