package gateway

import (
	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// Events receives what the gateway reports to the app's backend: each
// session's login, and its end as a logout or an offline with the reason
// (internal/webhook implements it).
type Events interface {
	// Emit must not block: it is called from session goroutines.
	Emit(herald.Event)
}

// emitLogin reports s's login; from then on its end is reported too.
func (s *session) emitLogin() {
	ev := s.g.cfg.Events
	if ev == nil {
		return
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return // end has run or is running: it would not report this session
	}
	s.announced = true
	s.mu.Unlock()
	ev.Emit(herald.Event{Type: herald.EventLogin, Time: s.g.cfg.Now(), User: s.user, Device: s.device})
}

// emitEnd reports the end of a session whose login was reported: a
// logout, or an offline with why the session ended. Every reported login
// gets exactly one of the two (end runs once).
func (s *session) emitEnd() {
	ev := s.g.cfg.Events
	if ev == nil {
		return
	}
	s.mu.Lock()
	code, loggedOut, announced := s.closeCode, s.loggedOut, s.announced
	s.mu.Unlock()
	if !announced {
		return
	}
	e := herald.Event{Type: herald.EventOffline, Time: s.g.cfg.Now(), User: s.user, Device: s.device, Reason: offlineReason(code)}
	if loggedOut {
		e.Type, e.Reason = herald.EventLogout, ""
	}
	ev.Emit(e)
}

// offlineReason maps the close code a session ended with (0: none, the
// connection dropped) to an offline event's reason.
func offlineReason(code int) string {
	switch code {
	case 0, proto.CloseNormal: // dropped, or closed by the client without a logout
		return herald.OfflineConnectionLost
	case proto.CloseHeartbeatTimeout:
		return herald.OfflineHeartbeatTimeout
	case proto.CloseKickedOut:
		return herald.OfflineKickedOut
	case proto.CloseServerShutdown:
		return herald.OfflineServerShutdown
	case proto.CloseTokenExpired:
		return herald.OfflineTokenExpired
	case proto.CloseSlowConsumer:
		return herald.OfflineSlowConsumer
	}
	return herald.OfflineError
}
