package policy

import (
	"testing"

	"go.uber.org/goleak"
)

// FakeClock runs callbacks in goroutines; none may outlive a test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
