//go:build linux || darwin || freebsd

package queue

import "golang.org/x/sys/unix"

// freeSpace returns the bytes an unprivileged writer can still use on the
// filesystem of dir.
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// fsSize returns the size of the filesystem of dir.
func fsSize(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks) * int64(st.Bsize), nil
}
