//go:build !linux

package queue

const adviseSupported = false

func (a *advisor) scan() {}
