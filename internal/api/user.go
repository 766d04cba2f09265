package api

import (
	"net/http"
	"strconv"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
)

// The user registry (ZIM's server API registers and deletes users):
// register 1-100 users with per-user results, read one, unregister one.

func userInfo(u herald.User) *apiclient.User {
	return &apiclient.User{UserID: u.ID, UserName: u.Name, AvatarURL: u.Avatar, Extended: u.Extended, RegisteredAt: u.RegisteredAt}
}

func (h *Handler) registerUsers(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Users == nil {
		writeErr(w, h.log, unavailable("the user registry"))
		return
	}
	var req apiclient.RegisterUsersRequest
	if err := decode(r, &req, false); err != nil {
		writeErr(w, h.log, err)
		return
	}
	if len(req.Users) == 0 || len(req.Users) > apiclient.MaxRegisterUsers {
		writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "users has %d entries; register 1-%d", len(req.Users), apiclient.MaxRegisterUsers))
		return
	}
	rep := apiclient.RegisterUsersReply{Results: make([]apiclient.RegisterUserResult, len(req.Users))}
	var (
		batch    []herald.User
		index    []int // batch[i] is req.Users[index[i]]
		firstErr error
		same     = true
	)
	fail := func(i int, err error) {
		body := errorBody(h.log, err)
		rep.Results[i].Error = &body
		rep.Failed++
		if firstErr == nil {
			firstErr = err
		} else if herald.ErrorCode(err) != herald.ErrorCode(firstErr) || herald.ErrorMessage(err) != herald.ErrorMessage(firstErr) {
			same = false
		}
	}
	seen := make(map[string]bool, len(req.Users))
	for i, ru := range req.Users {
		rep.Results[i].UserID = ru.UserID
		if err := checkUser("users["+strconv.Itoa(i)+"].user_id", ru.UserID); err != nil {
			writeErr(w, h.log, err)
			return
		}
		if seen[ru.UserID] {
			writeErr(w, h.log, herald.Errorf(herald.CodeInvalidArgument, "users[%d]: %s is listed twice", i, ru.UserID))
			return
		}
		seen[ru.UserID] = true
		u := herald.User{ID: ru.UserID, Name: ru.UserName, Avatar: ru.AvatarURL, Extended: ru.Extended}
		if err := u.Validate(); err != nil {
			fail(i, err)
			continue
		}
		batch = append(batch, u)
		index = append(index, i)
	}
	if len(batch) > 0 {
		stored, err := h.cfg.Users.Register(r.Context(), batch)
		for k, i := range index {
			if err != nil {
				fail(i, err)
				continue
			}
			same = false
			rep.Registered++
			rep.Results[i].User = userInfo(stored[k])
		}
	}
	// A fault shared by every user (the store failed, or each broke the
	// same rule) is answered once, as the request's error.
	if rep.Failed == len(req.Users) && same {
		writeErr(w, h.log, firstErr)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *Handler) getUser(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Users == nil {
		writeErr(w, h.log, unavailable("the user registry"))
		return
	}
	id := r.PathValue("user")
	if err := checkUser("user", id); err != nil {
		writeErr(w, h.log, err)
		return
	}
	u, err := h.cfg.Users.User(r.Context(), id)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, userInfo(u))
}

func (h *Handler) unregisterUser(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Users == nil {
		writeErr(w, h.log, unavailable("the user registry"))
		return
	}
	id := r.PathValue("user")
	if err := checkUser("user", id); err != nil {
		writeErr(w, h.log, err)
		return
	}
	res, err := h.cfg.Users.Unregister(r.Context(), id)
	if err != nil {
		writeErr(w, h.log, err)
		return
	}
	h.log.Info("user unregistered through the API", "user_id", id, "sessions", res.Sessions, "devices", len(res.Devices))
	writeJSON(w, http.StatusOK, apiclient.UnregisterUserReply{UserID: id, Sessions: res.Sessions, Devices: len(res.Devices)})
}
