package client

import (
	"context"
	"errors"
	"testing"

	"github.com/herald-im/herald/proto"
)

// TestHistoryLimitRefused: a page larger than the server's 200 is refused
// before sending, as the server would refuse it (HistoryQuery.Limit).
func TestHistoryLimitRefused(t *testing.T) {
	srv := newFakeServer(t)
	r := newRecorder()
	c := newTestClient(t, srv, r)
	fc := loggedIn(t, c, srv, r)
	ctx := context.Background()
	for _, limit := range []int{-1, maxHistoryLimit + 1} {
		if _, _, err := c.QueryHistoryMessage(ctx, ConvPeer, "bob", HistoryQuery{Limit: limit}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("QueryHistoryMessage with Limit %d = %v, want ErrInvalidArgument", limit, err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := c.QueryHistoryMessage(ctx, ConvPeer, "bob", HistoryQuery{Limit: maxHistoryLimit})
		done <- err
	}()
	f := fc.expect(t, proto.OpHistory) // the refused ones were not sent
	if got := decode[proto.HistoryRequest](t, f); got.Limit != maxHistoryLimit {
		t.Errorf("history request = %+v, want limit %d", got, maxHistoryLimit)
	}
	fc.reply(f.ID, proto.HistoryReply{})
	if err := wait(t, done); err != nil {
		t.Errorf("QueryHistoryMessage with Limit %d = %v", maxHistoryLimit, err)
	}
}
