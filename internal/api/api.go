// Package api is the server's HTTP API for operators and app backends,
// beside the client WebSocket. Every request carries an admin token
// (token.MintAdmin, signed with the server secret) as
// "Authorization: Bearer <token>". Today it serves push debugging: a test
// push to one device and the delivery log.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/token"
)

// Push is what the API needs of the push service.
type Push interface {
	Test(ctx context.Context, pushID string, cfg herald.PushConfig) (*push.TestReport, error)
	Log(ctx context.Context, q store.PushLogQuery) ([]herald.PushAttempt, error)
	Devices(user string) []herald.PushDevice
	Stats() push.Stats
	Suspended() []push.Suspension
}

// Paths served.
const (
	PathPushTest    = "/api/v1/push/test"
	PathPushLog     = "/api/v1/push/log"
	PathPushDevices = "/api/v1/push/devices"
	PathPushStatus  = "/api/v1/push/status"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// Handler serves the API.
type Handler struct {
	secret []byte
	push   Push
	now    func() time.Time
	log    *slog.Logger
	mux    *http.ServeMux
}

// New returns the API handler; mount it at /api/.
func New(secret []byte, p Push, log *slog.Logger) *Handler {
	h := &Handler{secret: secret, push: p, now: time.Now, log: log, mux: http.NewServeMux()}
	h.mux.HandleFunc("POST "+PathPushTest, h.pushTest)
	h.mux.HandleFunc("GET "+PathPushLog, h.pushLog)
	h.mux.HandleFunc("GET "+PathPushDevices, h.pushDevices)
	h.mux.HandleFunc("GET "+PathPushStatus, h.pushStatus)
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		writeErr(w, h.log, herald.Errorf(herald.CodeUnauthorized, "missing \"Authorization: Bearer <admin token>\""))
		return
	}
	if err := token.VerifyAdmin(h.secret, tok, h.now()); err != nil {
		writeErr(w, h.log, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	h.mux.ServeHTTP(w, r)
}

// TestRequest is the body of POST /api/v1/push/test.
type TestRequest struct {
	PushID string `json:"push_id"`
	herald.PushConfig
}

func (h *Handler) pushTest(w http.ResponseWriter, r *http.Request) {
	var req TestRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeErr(w, h.log, herald.Errorf(herald.CodeTooLarge, "body exceeds %d bytes", MaxBodyBytes))
			return
		}
		writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "body: %v", err))
		return
	}
	rep, err := h.push.Test(r.Context(), req.PushID, req.PushConfig)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *Handler) pushLog(w http.ResponseWriter, r *http.Request) {
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
	entries, err := h.push.Log(r.Context(), q)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
}

// Device is one push device on the API.
type Device struct {
	PushID       string    `json:"push_id"`
	Provider     string    `json:"provider"`
	App          string    `json:"app"`
	Env          string    `json:"environment"`
	User         string    `json:"user_id"`
	DeviceID     string    `json:"device_id"`
	RegisteredAt time.Time `json:"registered_at"`
	Badge        int       `json:"badge"`
}

func (h *Handler) pushDevices(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user_id")
	if err := herald.ValidateUserID(user); err != nil {
		writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "user_id: %s", herald.ErrorMessage(err)))
		return
	}
	devs := h.push.Devices(user)
	out := make([]Device, 0, len(devs))
	for _, d := range devs {
		out = append(out, Device{PushID: d.PushID, Provider: string(d.Provider), App: d.App, Env: string(d.Env),
			User: d.User, DeviceID: d.Device, RegisteredAt: d.RegisteredAt, Badge: d.Badge})
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
	writeJSON(w, http.StatusOK, Status{Stats: h.push.Stats(), Suspended: h.push.Suspended()})
}

// Error is the body of every failed request.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// status maps domain codes to HTTP statuses, once for the whole API.
func status(code herald.Code) int {
	switch code {
	case herald.CodeInvalidArgument:
		return http.StatusBadRequest
	case herald.CodeNotFound:
		return http.StatusNotFound
	case herald.CodeConflict:
		return http.StatusConflict
	case herald.CodeUnauthorized, herald.CodeTokenExpired, herald.CodeTokenInvalid, herald.CodeTokenMalformed:
		return http.StatusUnauthorized
	case herald.CodeForbidden:
		return http.StatusForbidden
	case herald.CodeRateLimited:
		return http.StatusTooManyRequests
	case herald.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case herald.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeErr(w http.ResponseWriter, log *slog.Logger, err error) {
	code := herald.ErrorCode(err)
	if code == herald.CodeInternal {
		log.Error("api request failed", "err", err)
	}
	writeJSON(w, status(code), Error{Code: string(code), Message: herald.ErrorMessage(err)})
}

func writeJSON(w http.ResponseWriter, st int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st)
	json.NewEncoder(w).Encode(v)
}
