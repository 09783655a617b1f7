package queue

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves goroutines behind (the writer,
// the janitor, Badger's own).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
