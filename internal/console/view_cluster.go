package console

import (
	"net/http"
	"time"
)

// ClusterNode is a node of the cluster as the cluster page shows it.
type ClusterNode struct {
	Node      string
	Self      bool      // the node serving the console
	Sessions  int64     // logged-in sessions: this node's gateway, or those another node announced
	LastHeard time.Time // another node's last presence message; zero for Self
}

// SetCluster serves the cluster page (/console/cluster): this node and
// the other nodes its presence hears on the bus, from nodes (called at
// each request; the serving node first). Call it before serving; without
// it the page is not served.
func (h *Handler) SetCluster(nodes func() []ClusterNode) {
	h.mux.HandleFunc("GET "+Prefix+"cluster", h.auth(func(w http.ResponseWriter, r *http.Request) {
		list := nodes()
		now := h.cfg.Now()
		type row struct {
			ClusterNode
			Ago string // since LastHeard, rounded
		}
		rows := make([]row, 0, len(list))
		for _, n := range list {
			rw := row{ClusterNode: n}
			if !n.Self {
				rw.Ago = now.Sub(n.LastHeard).Round(100 * time.Millisecond).String()
			}
			rows = append(rows, rw)
		}
		h.render(w, r, http.StatusOK, "cluster", map[string]any{"Nodes": rows, "Peers": len(rows) - 1})
	}))
}
