package console

import (
	"context"
	"net/http"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/media"
	"github.com/herald-im/herald/internal/store"
)

// A media message's part of its timeline page: the file (kind, name,
// size, type, hash, dimensions, duration, thumbnail) and who may read it,
// by the media service's own rule (media.MemberMayRead). The thumbnail
// and the file are served here, to the console's session only, from the
// media service's blobs; a user's signed URLs are not involved.

// Media is what the console reads of media files (internal/media's
// Service). Each call blocks on the store or the blobs.
type Media interface {
	// File returns file id's record, whoever may read it; CodeNotFound
	// when there is none.
	File(ctx context.Context, id string) (herald.MediaFile, error)
	// Open returns the bytes of f, or of its thumbnail; CodeNotFound when
	// there are none.
	Open(ctx context.Context, f herald.MediaFile, thumb bool) (media.Blob, error)
}

// maxReaders is how many of a group file's readers the page lists, by
// user ID; it counts them all.
const maxReaders = 200

// mediaView is a media message's file on its timeline page.
type mediaView struct {
	*herald.Media
	Kind    herald.MessageType
	Thumb   string // the thumbnail's console URL; empty when there is none or it cannot be read here
	File    string // the file's console URL (a download); empty when it cannot be read here
	Readers *readersView
	Error   string // why the file's record could not be read
}

// readersView is who may read a media message's file.
type readersView struct {
	Group  string   // the group's ID; empty for a peer conversation
	Users  []string // the readers, by user ID: the first maxReaders of a group's
	Total  int      // how many readers in all
	Later  int      // a group's members who joined after it was sent, but its sender: not readers
	Sender string   // the uploader, when no member (left the group): may read it still
	Gone   bool     // the group was dismissed: only the sender may read it
}

func (h *Handler) mediaRoutes() {
	h.mux.HandleFunc("GET "+Prefix+"media/{id}/thumbnail", h.auth(h.serveMedia(true)))
	h.mux.HandleFunc("GET "+Prefix+"media/{id}", h.auth(h.serveMedia(false)))
}

// mediaOf returns the view of m's file, or nil for a message without one.
func (h *Handler) mediaOf(ctx context.Context, m *herald.Message) *mediaView {
	if m.Media == nil {
		return nil
	}
	v := &mediaView{Media: m.Media, Kind: m.Type}
	if h.cfg.Media == nil {
		v.Error = "media files are not available to the console"
		return v
	}
	f, err := h.cfg.Media.File(ctx, m.Media.FileID)
	if err != nil {
		v.Error = h.failed("reading the file's record", err)
		return v
	}
	if f.Complete && f.Conv != "" {
		v.File = Prefix + "media/" + f.ID
		if f.Thumb {
			v.Thumb = v.File + "/thumbnail"
		}
	}
	rv, err := h.readers(ctx, f)
	if err != nil {
		v.Error = h.failed("reading who may read the file", err)
		return v
	}
	v.Readers = rv
	return v
}

// readers lists who may read f: a peer conversation's two users, or the
// members of the group who may (media.MemberMayRead), and the uploader
// (media.Service.MayRead's rule).
func (h *Handler) readers(ctx context.Context, f herald.MediaFile) (*readersView, error) {
	t, a, b, ok := herald.ParseConversationKey(f.Conv)
	if !ok {
		return nil, herald.Errorf(herald.CodeNotFound, "file %q is not attached to a message", f.ID)
	}
	if t == herald.ConversationPeer {
		return &readersView{Users: []string{a, b}, Total: 2}, nil
	}
	v := &readersView{Group: a, Sender: f.Owner}
	if h.cfg.Store == nil {
		return nil, herald.Errorf(herald.CodeUnavailable, "groups are not available to the console")
	}
	after := ""
	for {
		ms, err := h.cfg.Store.GroupMembers(ctx, a, after, 1000)
		if herald.ErrorCode(err) == herald.CodeNotFound {
			v.Gone = true
			return v, nil
		}
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			switch {
			case m.User == f.Owner:
				v.Sender = "" // a reader whenever they joined
			case !media.MemberMayRead(f, m):
				v.Later++
				continue
			}
			v.Total++
			if len(v.Users) < maxReaders {
				v.Users = append(v.Users, m.User)
			}
		}
		if len(ms) < 1000 {
			return v, nil
		}
		after = ms[len(ms)-1].User
	}
}

// serveMedia serves a file sent in a message, or its thumbnail, to the
// console's session: never cached beyond it, never sniffed, sandboxed;
// the file itself as a download. Every GET of the file (a Range request
// too, whatever its ranges) is logged, but once a minute per session and
// file (loggedFetch); a HEAD is not.
func (h *Handler) serveMedia(thumb bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if h.cfg.Media == nil {
			http.Error(w, "media files are not available to the console", http.StatusNotFound)
			return
		}
		if !media.ValidID(id) {
			http.Error(w, "not a media file ID", http.StatusBadRequest)
			return
		}
		f, err := h.cfg.Media.File(r.Context(), id)
		if err == nil && (!f.Complete || f.Conv == "") {
			// An upload not sent yet is its uploader's own.
			err = herald.Errorf(herald.CodeNotFound, "file %q is not attached to a message", id)
		}
		var blob media.Blob
		if err == nil {
			blob, err = h.cfg.Media.Open(r.Context(), f, thumb)
		}
		if err != nil {
			http.Error(w, h.failed("reading the file", err), herald.ErrorCode(err).HTTPStatus())
			return
		}
		defer blob.Close()
		if !thumb && r.Method == http.MethodGet && h.loggedFetch(sessionOf(r), f.ID) {
			h.log.Info("console: media file downloaded", "media_id", f.ID, "conv", f.Conv)
		}
		w.Header().Set("Cache-Control", "private, no-store")
		// The file itself as bytes, whatever type the sender declared: it
		// is not trusted with the console's origin.
		media.ServeBlob(w, r, f, thumb, true, blob)
	}
}

// messageByID finds message id in conversation conv, which its
// delivery-log entries name: a binary search over seq, as within a
// conversation a later seq has a higher ID (store.Store.AppendMessages),
// reading one message per step.
func (h *Handler) messageByID(ctx context.Context, conv string, id int64) (*herald.Message, error) {
	if h.cfg.Store == nil {
		return nil, herald.Errorf(herald.CodeUnavailable, "conversations are not available to the console")
	}
	key, err := conversationKey(conv)
	if err != nil {
		return nil, err
	}
	last, err := h.cfg.Store.History(ctx, key, store.HistoryQuery{Direction: store.Backward, Limit: 1})
	if err != nil {
		return nil, err
	}
	lo, hi := int64(1), int64(0)
	if len(last) > 0 {
		hi = last[0].Seq
	}
	for lo <= hi {
		mid := lo + (hi-lo)/2
		// The first message at or after mid (seqs have no gaps; should
		// one be missing, the search still holds).
		ms, err := h.cfg.Store.History(ctx, key, store.HistoryQuery{FromSeq: mid - 1, Direction: store.Forward, Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(ms) == 0 {
			hi = mid - 1
			continue
		}
		switch m := ms[0]; {
		case m.ID == id:
			return m, nil
		case m.ID < id:
			lo = m.Seq + 1
		default:
			hi = mid - 1
		}
	}
	return nil, herald.Errorf(herald.CodeNotFound, "conversation %s has no message ID %d", key, id)
}

// timelineMessage finds message id, whose timeline entries are given,
// in the conversation the first of them to name one names. named is
// false when none does (an entry written before entries named their
// conversation); a call's push names its call (herald.CallConversationKey),
// whose timeline has no message: m is nil then.
func (h *Handler) timelineMessage(ctx context.Context, id int64, entries []herald.PushAttempt) (m *herald.Message, named bool, err error) {
	for _, e := range entries {
		if e.Conv == "" {
			continue
		}
		if _, _, _, ok := herald.ParseConversationKey(e.Conv); !ok {
			return nil, true, nil
		}
		m, err := h.messageByID(ctx, e.Conv, id)
		return m, true, err
	}
	return nil, false, nil
}

// fetchLogWindow is how long after a logged fetch of a file the same
// session's fetches of it are not logged again.
const fetchLogWindow = time.Minute

// fetchKey names a session's fetches of one file ("" for a request with
// no session).
type fetchKey struct{ session, file string }

// loggedFetch reports whether a fetch of file by session is to be
// logged: when the session's last logged fetch of it is a minute old or
// more. Every fetch (any Range, which a Range parser of ours could read
// otherwise than net/http does) is thus within a minute of a logged one,
// while a player's or a resumed download's many Range requests log once.
func (h *Handler) loggedFetch(s *session, file string) bool {
	k := fetchKey{file: file}
	if s != nil {
		k.session = s.id
	}
	now := h.cfg.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if at, ok := h.fetches[k]; ok && now.Sub(at) < fetchLogWindow {
		return false
	}
	if len(h.fetches) >= 256 {
		for o, at := range h.fetches {
			if now.Sub(at) >= fetchLogWindow {
				delete(h.fetches, o)
			}
		}
	}
	h.fetches[k] = now
	return true
}
