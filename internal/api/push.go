package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

// TestRequest is the body of POST /api/v1/push/test.
type TestRequest = apiclient.PushTestRequest

func (h *Handler) pushTest(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Push == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	var req TestRequest
	if err := decode(r, &req, false); err != nil {
		writeErr(w, h.log, err)
		return
	}
	rep, err := h.cfg.Push.Test(r.Context(), req.PushID, req.PushConfig)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *Handler) pushLog(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Push == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	q := store.PushLogQuery{User: r.URL.Query().Get("user_id"), PushID: r.URL.Query().Get("push_id")}
	if v := r.URL.Query().Get("msg_id"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "msg_id %q is not an integer", v))
			return
		}
		q.MsgID = n
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "limit %q is not an integer", v))
			return
		}
		q.Limit = n
	}
	entries, err := h.cfg.Push.Log(r.Context(), q)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	if entries == nil {
		entries = []herald.PushAttempt{}
	}
	writeJSON(w, http.StatusOK, apiclient.PushLogReply{Entries: entries})
}

// Device is one push device on the operator's device listing.
type Device struct {
	PushID       string    `json:"push_id"`
	Provider     string    `json:"provider"`
	App          string    `json:"app"`
	Env          string    `json:"environment"`
	User         string    `json:"user_id"`
	DeviceID     string    `json:"device_id"`
	RegisteredAt time.Time `json:"registered_at"`
	Badge        int       `json:"badge"`
	BadgeKind    string    `json:"badge_kind,omitempty"`
}

func (h *Handler) pushDevices(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Push == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	user := r.URL.Query().Get("user_id")
	if err := herald.ValidateUserID(user); err != nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "user_id: %s", herald.ErrorMessage(err)))
		return
	}
	devs := h.cfg.Push.Devices(user)
	out := make([]Device, 0, len(devs))
	for _, d := range devs {
		out = append(out, Device{PushID: d.PushID, Provider: string(d.Provider), App: d.App, Env: string(d.Env),
			User: d.User, DeviceID: d.Device, RegisteredAt: d.RegisteredAt, Badge: d.Badge, BadgeKind: string(d.BadgeKind)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}

// Status is the body of GET /api/v1/push/status: the dispatcher's
// counters and the apps whose credentials the vendor refused.
type Status struct {
	Stats     push.Stats        `json:"stats"`
	Suspended []push.Suspension `json:"suspended"`
}

func (h *Handler) pushStatus(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Push == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	writeJSON(w, http.StatusOK, Status{Stats: h.cfg.Push.Stats(), Suspended: h.cfg.Push.Suspended()})
}

func (h *Handler) listStrategies(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Strategies == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	out := apiclient.PushStrategiesReply{Strategies: []apiclient.PushStrategy{}}
	for _, st := range h.cfg.Strategies.Strategies() {
		out.Strategies = append(out.Strategies, strategyEntry(st))
	}
	writeJSON(w, http.StatusOK, out)
}

// putStrategy creates or replaces a strategy kept in the store; the body
// is the strategy, as the push configuration file writes it.
func (h *Handler) putStrategy(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Strategies == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	var st push.Strategy
	if err := decode(r, &st, false); err != nil {
		writeErr(w, h.log, err)
		return
	}
	got, err := h.cfg.Strategies.PutStrategy(r.Context(), r.PathValue("resources_id"), st)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, strategyEntry(got))
}

func (h *Handler) deleteStrategy(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Strategies == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	if err := h.cfg.Strategies.DeleteStrategy(r.Context(), r.PathValue("resources_id")); err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func strategyEntry(st push.NamedStrategy) apiclient.PushStrategy {
	b, _ := json.Marshal(st.Strategy)
	return apiclient.PushStrategy{ResourcesID: st.ID, Source: st.Source, Strategy: b}
}

func (h *Handler) getPushRule(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Push == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	id := r.PathValue("user")
	if err := checkUser("user", id); err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, h.cfg.Push.Rule(id))
}

func (h *Handler) setPushRule(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Push == nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnavailable, "offline push is not configured on this server"))
		return
	}
	id := r.PathValue("user")
	if err := checkUser("user", id); err != nil {
		writeErr(w, h.log, err)
		return
	}
	var req herald.PushRule
	if err := decode(r, &req, false); err != nil {
		writeErr(w, h.log, err)
		return
	}
	rule, err := h.cfg.Push.SetRule(r.Context(), id, req)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, rule)
}
