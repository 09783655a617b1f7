//go:build !(linux || darwin || freebsd)

package queue

func freeSpace(string) (int64, error) { return 0, errNoStatfs }

func fsSize(string) (int64, error) { return 0, errNoStatfs }
