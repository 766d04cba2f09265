package console_test

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/config"
)

// TestClusterPage: the cluster page lists the node serving it; with a bus
// (HERALD_TEST_NATS) and a second node, it lists that node too, with the
// sessions it announced. Logged out, it is not shown.
func TestClusterPage(t *testing.T) {
	nats := os.Getenv("HERALD_TEST_NATS")
	prefix := "test.console.cluster." + strconv.Itoa(os.Getpid())
	node := func(id string) func(*config.Config) {
		return func(c *config.Config) {
			c.NodeID = id
			if nats != "" {
				c.Bus, c.BusPrefix = nats, prefix
			}
		}
	}
	srv := startServer(t, node("node-a"))
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	if resp := get(t, c, base+"cluster"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("cluster page logged out: %d, want 303 to the login page", resp.StatusCode)
	}
	login(t, c, base)
	resp := get(t, c, base+"cluster")
	page := body(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "<code>node-a</code> (this node)") || !strings.Contains(page, `href="/console/cluster" aria-current="page"`) {
		t.Fatalf("cluster page: %d, want 200 naming node-a as this node, with its nav link current:\n%s", resp.StatusCode, page)
	}
	if nats == "" {
		t.Log("HERALD_TEST_NATS is not set: the page is checked with one node only")
		if !strings.Contains(page, "No other node is heard") {
			t.Errorf("single node: the page does not say no other node is heard:\n%s", page)
		}
		return
	}
	startServer(t, node("node-b"))
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(page, "<code>node-b</code>") {
		if time.Now().After(deadline) {
			t.Fatalf("the cluster page of node-a never listed node-b:\n%s", page)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
		page = body(t, get(t, c, base+"cluster"))
	}
}
