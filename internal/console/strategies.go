package console

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// The strategies page lists every push strategy (the push configuration
// file's, read-only, and those kept in the store) and puts or deletes the
// stored ones: the same operations as the server API's
// /api/v1/push/strategies, through the push service, so a change is seen
// by every node.

// strategyForm is the page's form: a resources ID and the strategy as
// JSON, as the push configuration file and the API write it.
type strategyForm struct {
	ID, JSON string
}

func (h *Handler) strategiesData(f strategyForm) map[string]any {
	if f.JSON == "" {
		f.JSON = `{"type": "alert", "sound": "default"}`
	}
	return map[string]any{"Form": f, "Strategies": h.strategies(), "Managed": h.cfg.Strategies != nil}
}

func (h *Handler) strategiesPage(w http.ResponseWriter, r *http.Request) {
	f := strategyForm{ID: strings.TrimSpace(r.URL.Query().Get("resources_id"))}
	for _, st := range h.strategies() {
		if st.ID == f.ID {
			b, _ := json.Marshal(st.Strategy)
			f.JSON = string(b)
		}
	}
	h.render(w, r, http.StatusOK, "strategies", h.strategiesData(f))
}

// changeStrategy puts (action "put") or deletes (action "delete") one
// stored strategy, then shows the page again with the outcome.
func (h *Handler) changeStrategy(w http.ResponseWriter, r *http.Request) {
	f := strategyForm{ID: strings.TrimSpace(r.PostFormValue("resources_id")), JSON: r.PostFormValue("strategy")}
	if h.cfg.Strategies == nil {
		data := h.strategiesData(f)
		data["Error"] = "this server manages no push strategies"
		h.render(w, r, http.StatusServiceUnavailable, "strategies", data)
		return
	}
	var err error
	var done string
	switch r.PostFormValue("action") {
	case "put":
		var st push.Strategy
		dec := json.NewDecoder(bytes.NewReader([]byte(f.JSON)))
		dec.DisallowUnknownFields()
		if derr := dec.Decode(&st); derr != nil {
			err = herald.Errorf(herald.CodeInvalidArgument, "strategy: %v", derr)
			break
		}
		if _, err = h.cfg.Strategies.PutStrategy(r.Context(), f.ID, st); err == nil {
			done = "Strategy " + f.ID + " stored."
		}
	case "delete":
		if err = h.cfg.Strategies.DeleteStrategy(r.Context(), f.ID); err == nil {
			done, f = "Strategy "+f.ID+" deleted.", strategyForm{}
		}
	default:
		err = herald.Errorf(herald.CodeInvalidArgument, "action must be put or delete")
	}
	data := h.strategiesData(f)
	status := http.StatusOK
	if err != nil {
		status = strategyStatus(herald.ErrorCode(err))
		if status == http.StatusInternalServerError {
			h.log.Error("console: changing a push strategy failed", "resources_id", f.ID, "err", err)
			data["Error"] = "the store failed; see the server log"
		} else {
			data["Error"] = herald.ErrorMessage(err)
		}
	} else {
		data["Done"] = done
	}
	h.render(w, r, status, "strategies", data)
}

func strategyStatus(c herald.Code) int {
	switch c {
	case herald.CodeInvalidArgument:
		return http.StatusBadRequest
	case herald.CodeNotFound:
		return http.StatusNotFound
	case herald.CodeConflict:
		return http.StatusConflict
	case herald.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case herald.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
