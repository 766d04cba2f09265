// Package media owns media files: uploads (created, appended to chunk by
// chunk, checked and completed), their bytes (Blobs: the data folder, or an
// object store), thumbnails, who may download a file and the signed URLs
// that let them, and attaching a file to the message that carries it.
// README.md has the design; docs/protocol.md ("Media") the HTTP API.
package media

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
)

// Store is what the service needs of the store (store.Store has it).
type Store interface {
	CreateMedia(ctx context.Context, f herald.MediaFile) error
	UpdateMedia(ctx context.Context, f herald.MediaFile, from int64) error
	Media(ctx context.Context, id string) (herald.MediaFile, error)
	MediaUsage(ctx context.Context, owner string, since time.Time) (int64, error)
	DeleteMedia(ctx context.Context, id string) error
	UnreferencedMedia(ctx context.Context, before time.Time, limit int) ([]herald.MediaFile, error)
	UserGroups(ctx context.Context, user string) ([]herald.GroupMember, error)
}

// Config bounds the service. Zero fields take the defaults given.
type Config struct {
	MaxImageBytes int64 // zero means 20 MiB
	MaxFileBytes  int64 // zero means 100 MiB
	MaxAudioBytes int64 // zero means 20 MiB
	MaxVideoBytes int64 // zero means 100 MiB
	// DailyQuota is how many bytes one user may upload per UTC day
	// (declared sizes of the uploads created that day); zero means 1 GiB.
	DailyQuota int64
	URLTTL     time.Duration // lifetime of a signed download URL; zero means 5 minutes
	// Grace is how long an upload no message refers to is kept (finished
	// or not); then Sweep deletes it. Zero means 24 hours. An upload is
	// not sent once within a minute of its end (Attach refuses it), so a
	// send never races the deletion.
	Grace time.Duration
	// MaxPixels is the largest image (width x height) decoded for a
	// thumbnail; a larger one is refused; zero means 50,000,000.
	MaxPixels    int64
	ThumbSize    int // longest side of a thumbnail; zero means 320
	ThumbWorkers int // images decoded at once; zero means 2
	ThumbQueue   int // uploads waiting for a thumbnail worker; beyond it none is made; zero means 32
	// Secret signs download URLs (a key derived from it: it is also the
	// login token secret).
	Secret []byte
	// Authenticated, when set, is told of each request whose token (or
	// signed URL) checked out: the listener stops counting its connection
	// among those not yet authenticated.
	Authenticated func(*http.Request)
	Now           func() time.Time
	Logger        *slog.Logger
}

func (c Config) withDefaults() Config {
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxImageBytes, 20<<20)
	def(&c.MaxFileBytes, 100<<20)
	def(&c.MaxAudioBytes, 20<<20)
	def(&c.MaxVideoBytes, 100<<20)
	def(&c.DailyQuota, 1<<30)
	def(&c.MaxPixels, 50_000_000)
	if c.URLTTL == 0 {
		c.URLTTL = 5 * time.Minute
	}
	if c.Grace == 0 {
		c.Grace = 24 * time.Hour
	}
	if c.ThumbSize == 0 {
		c.ThumbSize = 320
	}
	if c.ThumbWorkers == 0 {
		c.ThumbWorkers = 2
	}
	if c.ThumbQueue == 0 {
		c.ThumbQueue = 32
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// MaxBytes is the size limit of kind.
func (c Config) MaxBytes(kind herald.MediaKind) int64 {
	switch kind {
	case herald.KindImage:
		return c.MaxImageBytes
	case herald.KindAudio:
		return c.MaxAudioBytes
	case herald.KindVideo:
		return c.MaxVideoBytes
	}
	return c.MaxFileBytes
}

// Service is the media component.
type Service struct {
	st     Store
	blobs  Blobs
	cfg    Config
	log    *slog.Logger
	thumbs *thumbnailer
	urlKey []byte

	// locks serialises the requests on one upload, and quotaMu one
	// owner's creations (the quota check and the create are one step on
	// this node; across nodes a day's quota may be passed by the uploads
	// created at the same moment).
	mu      sync.Mutex
	locks   map[string]*idLock
	quotaMu sync.Mutex

	stats Stats
}

// Stats counts what the service did and refused.
type Stats struct {
	Created, Completed, Rejected, ThumbsMade, ThumbsSkipped, Downloads, Denied, Swept atomic.Int64
}

// New returns a service storing records in st and bytes in blobs.
func New(st Store, blobs Blobs, cfg Config) *Service {
	cfg = cfg.withDefaults()
	m := hmac.New(sha256.New, cfg.Secret)
	m.Write([]byte("herald media url key"))
	return &Service{
		st: st, blobs: blobs, cfg: cfg, log: cfg.Logger,
		thumbs: newThumbnailer(cfg.ThumbWorkers, cfg.ThumbQueue, cfg.MaxPixels, cfg.ThumbSize),
		urlKey: m.Sum(nil), locks: make(map[string]*idLock),
	}
}

// Config returns the limits in force, with defaults applied.
func (s *Service) Config() Config { return s.cfg }

// StatsSnapshot returns the counters.
func (s *Service) StatsSnapshot() map[string]int64 {
	return map[string]int64{
		"created": s.stats.Created.Load(), "completed": s.stats.Completed.Load(), "rejected": s.stats.Rejected.Load(),
		"thumbs_made": s.stats.ThumbsMade.Load(), "thumbs_skipped": s.stats.ThumbsSkipped.Load(),
		"downloads": s.stats.Downloads.Load(), "denied": s.stats.Denied.Load(), "swept": s.stats.Swept.Load(),
	}
}

type idLock struct {
	mu   sync.Mutex
	refs int // requests holding or waiting for mu; s.mu guards it
}

// lock takes the lock of upload id and returns its release.
func (s *Service) lock(id string) func() {
	s.mu.Lock()
	l := s.locks[id]
	if l == nil {
		l = new(idLock)
		s.locks[id] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, id)
		}
		s.mu.Unlock()
	}
}

// NewUpload is what a client declares when it starts an upload.
type NewUpload struct {
	Kind herald.MediaKind
	Name string
	MIME string
	Size int64
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Create starts an upload of owner's. CodeInvalidArgument for a bad name,
// type or size, CodeTooLarge over the kind's limit, CodeRateLimited past
// the daily quota.
func (s *Service) Create(ctx context.Context, owner string, u NewUpload) (herald.MediaFile, error) {
	if err := herald.ValidateMediaName(u.Name); err != nil {
		return herald.MediaFile{}, err
	}
	t, err := NormalizeMIME(u.MIME)
	if err != nil {
		return herald.MediaFile{}, err
	}
	if u.Size <= 0 {
		return herald.MediaFile{}, herald.Errorf(herald.CodeInvalidArgument, "size %d: an upload declares its length in bytes, at least 1", u.Size)
	}
	if max := s.cfg.MaxBytes(u.Kind); u.Size > max {
		s.stats.Rejected.Add(1)
		return herald.MediaFile{}, herald.Errorf(herald.CodeTooLarge, "a %s is at most %d bytes; this one is %d", u.Kind, max, u.Size)
	}
	if u.Kind == herald.KindImage && !imageTypes[canonical(t)] {
		return herald.MediaFile{}, herald.Errorf(herald.CodeInvalidArgument, "an image upload must be JPEG, PNG, GIF or WebP, not %s; send it as a file", t)
	}
	now := s.cfg.Now().UTC()
	f := herald.MediaFile{ID: newID(), Owner: owner, Kind: u.Kind, Name: u.Name, MIME: t, Size: u.Size, CreatedAt: now.Truncate(time.Millisecond)}
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	used, err := s.st.MediaUsage(ctx, owner, day)
	if err != nil {
		return herald.MediaFile{}, err
	}
	if used+u.Size > s.cfg.DailyQuota {
		s.stats.Rejected.Add(1)
		return herald.MediaFile{}, herald.Errorf(herald.CodeRateLimited, "daily upload quota: %d of %d bytes used today (UTC); this upload needs %d", used, s.cfg.DailyQuota, u.Size)
	}
	if err := s.st.CreateMedia(ctx, f); err != nil {
		return herald.MediaFile{}, err
	}
	s.stats.Created.Add(1)
	return f, nil
}

// Upload returns owner's upload id. CodeNotFound when there is none or it
// is another user's (whose uploads are not told apart from none).
func (s *Service) Upload(ctx context.Context, owner, id string) (herald.MediaFile, error) {
	f, err := s.st.Media(ctx, id)
	if err == nil && f.Owner != owner {
		err = herald.Errorf(herald.CodeNotFound, "no upload %q", id)
	}
	return f, err
}

// Write appends a chunk of upload id, which must start at offset (the
// upload's Received: CodeConflict otherwise, with nothing written). length
// is the chunk's declared length, or -1 when unknown. The bytes read
// before a failure of r (a dropped connection) are kept, and the upload
// resumes after them. When the upload is complete, its type is checked,
// its hash recorded, its image measured and a thumbnail made; an upload
// that fails those checks is deleted (CodeInvalidArgument, CodeTooLarge).
func (s *Service) Write(ctx context.Context, owner, id string, offset, length int64, r io.Reader) (herald.MediaFile, error) {
	unlock := s.lock(id)
	defer unlock()
	f, err := s.Upload(ctx, owner, id)
	if err != nil {
		return f, err
	}
	if f.Complete {
		return f, herald.Errorf(herald.CodeConflict, "upload %q is complete", id)
	}
	if offset != f.Received {
		return f, herald.Errorf(herald.CodeConflict, "upload %q is at offset %d, not %d: resume from %d", id, f.Received, offset, f.Received)
	}
	left := f.Size - f.Received
	if length > left {
		return f, herald.Errorf(herald.CodeTooLarge, "the chunk of %d bytes at offset %d goes past the declared size %d", length, offset, f.Size)
	}
	h := sha256.New()
	if len(f.HashState) > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(f.HashState); err != nil {
			return f, fmt.Errorf("upload %s: hash state: %w", id, err)
		}
	}
	if offset == 0 {
		// The type is checked on the first bytes, before any is stored.
		head := make([]byte, min(SniffLen, f.Size))
		if n, err := io.ReadFull(r, head); err != nil {
			return f, herald.Errorf(herald.CodeInvalidArgument, "the first chunk ended after %d bytes: it must carry the first %d bytes of the file (or all of a shorter one)", n, len(head))
		}
		f.Sniffed = sniff(head)
		if err := checkType(f.Kind, f.MIME, f.Sniffed); err != nil {
			s.stats.Rejected.Add(1)
			s.discard(ctx, f)
			return f, err
		}
		r = io.MultiReader(bytes.NewReader(head), r)
	}
	// One byte past the declared size tells a chunk that is too long.
	counted := &countingReader{r: io.LimitReader(r, left+1), h: h}
	n, werr := s.blobs.Append(ctx, id, offset, counted)
	if counted.n > left {
		// Nothing of this chunk is recorded; the next Append truncates it.
		return f, herald.Errorf(herald.CodeTooLarge, "the chunk goes past the declared size %d: nothing of it was kept", f.Size)
	}
	if n != counted.n {
		// A write failure: the hash saw bytes the file did not get.
		if werr == nil {
			werr = fmt.Errorf("wrote %d of %d bytes", n, counted.n)
		}
		return f, fmt.Errorf("upload %s: %w", id, werr)
	}
	if n > 0 {
		state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return f, err
		}
		next := f
		next.Received, next.HashState = offset+n, state
		if next.Received == next.Size {
			next.Complete, next.SHA256 = true, hex.EncodeToString(h.Sum(nil))
		}
		if next.Complete {
			if err := s.finish(ctx, &next); err != nil {
				s.stats.Rejected.Add(1)
				s.discard(ctx, f)
				return f, err
			}
		}
		// Stored with the request's context: a client gone after its
		// bytes were synced still gets them counted.
		if err := s.st.UpdateMedia(context.WithoutCancel(ctx), next, offset); err != nil {
			return f, err
		}
		f = next
		if f.Complete {
			s.stats.Completed.Add(1)
		}
	}
	if werr != nil {
		return f, herald.Errorf(herald.CodeInvalidArgument, "the chunk ended early (%v): %d bytes kept; resume at offset %d", werr, n, f.Received)
	}
	if length >= 0 && n < length {
		return f, herald.Errorf(herald.CodeInvalidArgument, "the chunk ended after %d of its %d bytes; resume at offset %d", n, length, f.Received)
	}
	return f, nil
}

type countingReader struct {
	r io.Reader
	h io.Writer
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	return n, err
}

// finish completes f, whose bytes are all appended: the blob is
// committed, and an image measured and thumbnailed.
func (s *Service) finish(ctx context.Context, f *herald.MediaFile) error {
	if err := s.blobs.Commit(ctx, f.ID, f.Size); err != nil {
		return fmt.Errorf("upload %s: commit: %w", f.ID, err)
	}
	if f.Kind != herald.KindImage {
		return nil
	}
	b, err := s.blobs.Open(ctx, f.ID)
	if err != nil {
		return err
	}
	defer b.Close()
	w, h, err := s.thumbs.measure(b)
	if err != nil {
		return err
	}
	f.Width, f.Height = w, h
	if _, err := b.Seek(0, io.SeekStart); err != nil {
		return err
	}
	jpg, tw, th, err := s.thumbs.make(ctx, b)
	if err != nil {
		if herald.ErrorCode(err) == herald.CodeInvalidArgument {
			return err // the header was fine, the pixels are not
		}
		s.stats.ThumbsSkipped.Add(1)
		s.log.Warn("media: no thumbnail", "media_id", f.ID, "err", err)
		return nil
	}
	if _, err := s.blobs.Put(ctx, thumbID(f.ID), bytes.NewReader(jpg)); err != nil {
		s.stats.ThumbsSkipped.Add(1)
		s.log.Warn("media: thumbnail not stored", "media_id", f.ID, "err", err)
		return nil
	}
	s.stats.ThumbsMade.Add(1)
	f.Thumb, f.ThumbW, f.ThumbH = true, tw, th
	return nil
}

func thumbID(id string) string { return id + ".thumb" }

// discard deletes upload f, bytes and record: nothing of a refused upload
// is left.
func (s *Service) discard(ctx context.Context, f herald.MediaFile) {
	ctx = context.WithoutCancel(ctx)
	if err := s.blobs.Delete(ctx, f.ID); err != nil {
		s.log.Error("media: delete bytes", "media_id", f.ID, "err", err)
	}
	if err := s.blobs.Delete(ctx, thumbID(f.ID)); err != nil {
		s.log.Error("media: delete thumbnail", "media_id", f.ID, "err", err)
	}
	if err := s.st.DeleteMedia(ctx, f.ID); err != nil {
		s.log.Error("media: delete record", "media_id", f.ID, "err", err)
	}
}

// Abort deletes owner's upload id unless a message refers to it
// (CodeConflict).
func (s *Service) Abort(ctx context.Context, owner, id string) error {
	unlock := s.lock(id)
	defer unlock()
	f, err := s.Upload(ctx, owner, id)
	if err != nil {
		return err
	}
	if f.Conv != "" {
		return herald.Errorf(herald.CodeConflict, "upload %q was sent in a message: it stays while the message does", id)
	}
	s.discard(ctx, f)
	return nil
}

// Attach fills the media of m, a media message its sender is sending to
// m.Conv, from the upload it names, and records that the message refers
// to it: the file is then kept, and the conversation may download it. The
// upload must be the sender's, complete, of the message's kind, and not
// sent to another conversation (CodeConflict: upload it again). The
// sender's DurationMS (and a video's Width and Height) are kept.
//
// The file's sent time (AttachedAt, which MemberMayRead goes by) is set
// here only for a file not yet sent: m.CreatedAt. A file sent before
// keeps its time until a message sending it again is stored (Sent), so
// a send answered as a duplicate, refused by the app's check or not
// stored does not let later members read it.
//
// Attach is called before the message is stored: a message whose store
// fails leaves its file referenced (kept, harmlessly), never a stored
// message whose file the lifecycle deletes.
func (s *Service) Attach(ctx context.Context, m *herald.Message) error {
	if m.Media == nil || !ValidID(m.Media.FileID) {
		return herald.Errorf(herald.CodeInvalidArgument, "media.file_id is missing or malformed")
	}
	unlock := s.lock(m.Media.FileID)
	defer unlock()
	f, err := s.Upload(ctx, m.From, m.Media.FileID)
	if herald.ErrorCode(err) == herald.CodeNotFound {
		return herald.Errorf(herald.CodeNotFound, "no upload %q of yours: upload the file first", m.Media.FileID)
	}
	if err != nil {
		return err
	}
	switch {
	case !f.Complete:
		return herald.Errorf(herald.CodeInvalidArgument, "upload %q has %d of its %d bytes: finish it before sending", f.ID, f.Received, f.Size)
	case f.Kind.MessageType() != m.Type:
		return herald.Errorf(herald.CodeInvalidArgument, "upload %q is a %s; it cannot be sent as a %s message", f.ID, f.Kind, m.Type)
	case f.Conv == "" && !s.cfg.Now().Before(f.CreatedAt.Add(s.cfg.Grace-attachMargin)):
		return herald.Errorf(herald.CodeNotFound, "upload %q is older than %s and about to be deleted: upload the file again", f.ID, s.cfg.Grace)
	case f.Conv != "" && f.Conv != m.Conv:
		return herald.Errorf(herald.CodeConflict, "upload %q was sent in another conversation; upload the file again to send it here", f.ID)
	}
	md := &herald.Media{FileID: f.ID, Name: f.Name, Size: f.Size, MIME: f.MIME, SHA256: f.SHA256,
		DurationMS: m.Media.DurationMS, Thumbnail: f.Thumb, ThumbWidth: f.ThumbW, ThumbHeight: f.ThumbH}
	switch f.Kind {
	case herald.KindImage:
		md.Width, md.Height = f.Width, f.Height
	case herald.KindVideo:
		md.Width, md.Height = m.Media.Width, m.Media.Height
	}
	if f.Kind != herald.KindAudio && f.Kind != herald.KindVideo {
		md.DurationMS = 0
	}
	m.Media = md
	at := m.CreatedAt
	if at.IsZero() {
		at = s.cfg.Now().UTC().Truncate(time.Millisecond)
	}
	if f.Conv == "" {
		f.Conv, f.AttachedAt = m.Conv, at
		if err := s.st.UpdateMedia(ctx, f, f.Received); err != nil {
			return err
		}
	}
	return nil
}

// Sent records that m, a media message Attach filled, is stored (and is
// not a duplicate) at m.CreatedAt: the file's sent time moves on to it
// when it is later, so the members who get this message may read the
// file. It never moves back.
func (s *Service) Sent(ctx context.Context, m *herald.Message) error {
	if m.Media == nil {
		return nil
	}
	unlock := s.lock(m.Media.FileID)
	defer unlock()
	f, err := s.st.Media(ctx, m.Media.FileID)
	if err != nil {
		return err
	}
	if f.Conv != m.Conv || !m.CreatedAt.After(f.AttachedAt) {
		return nil
	}
	f.AttachedAt = m.CreatedAt
	return s.st.UpdateMedia(ctx, f, f.Received)
}

// MayRead reports whether user may download file f: its owner; for a
// peer conversation its two users; for a group, the members who joined
// at or before the message was sent.
func (s *Service) MayRead(ctx context.Context, user string, f herald.MediaFile) (bool, error) {
	if user == f.Owner {
		return true, nil
	}
	if f.Conv == "" {
		return false, nil
	}
	t, a, b, ok := herald.ParseConversationKey(f.Conv)
	if !ok {
		return false, nil
	}
	if t == herald.ConversationPeer {
		return user == a || user == b, nil
	}
	groups, err := s.st.UserGroups(ctx, user)
	if err != nil {
		return false, err
	}
	for _, g := range groups {
		if g.Group == a {
			return MemberMayRead(f, g), nil
		}
	}
	return false, nil
}

// MemberMayRead is MayRead's rule for a member m of the group file f was
// sent to: m may read it when they joined at or before the message was
// sent (its CreatedAt: Attach). A later member does not get the message
// either, but for one joining in the moment between the message's time
// and its store (it waits in the chat's write queue), who gets it and may
// not read the file. The console lists a file's readers with it.
func MemberMayRead(f herald.MediaFile, m herald.GroupMember) bool {
	return !m.JoinedAt.After(f.AttachedAt)
}

// File returns the record of file id, whoever may read it: for the
// operator's console, not for users (Readable). CodeNotFound when there
// is none.
func (s *Service) File(ctx context.Context, id string) (herald.MediaFile, error) {
	return s.st.Media(ctx, id)
}

// Readable returns file id (complete) if user may read it: CodeNotFound
// when there is none, CodeForbidden when it is not theirs to read.
func (s *Service) Readable(ctx context.Context, user, id string) (herald.MediaFile, error) {
	f, err := s.st.Media(ctx, id)
	if err != nil {
		return f, err
	}
	if !f.Complete {
		return f, herald.Errorf(herald.CodeNotFound, "file %q is not completely uploaded", id)
	}
	ok, err := s.MayRead(ctx, user, f)
	if err != nil {
		return f, err
	}
	if !ok {
		s.stats.Denied.Add(1)
		return f, herald.Errorf(herald.CodeForbidden, "file %q belongs to a conversation you are not in", id)
	}
	return f, nil
}

// Presigner is Blobs that can hand out URLs straight to a blob (S3).
type Presigner interface {
	Presign(ctx context.Context, id string, ttl time.Duration, contentType, disposition string) (string, error)
}

// Open returns the bytes of f, or of its thumbnail.
func (s *Service) Open(ctx context.Context, f herald.MediaFile, thumb bool) (Blob, error) {
	if thumb {
		if !f.Thumb {
			return nil, herald.Errorf(herald.CodeNotFound, "file %q has no thumbnail", f.ID)
		}
		return s.blobs.Open(ctx, thumbID(f.ID))
	}
	return s.blobs.Open(ctx, f.ID)
}

// Sign returns the query of a download URL of file id (its thumbnail when
// thumb) for user, valid until the returned time: "exp=...&u=...&sig=...".
func (s *Service) Sign(id, user string, thumb bool) (query string, expires time.Time) {
	expires = s.cfg.Now().Add(s.cfg.URLTTL).Truncate(time.Second)
	exp := strconv.FormatInt(expires.Unix(), 10)
	q := "exp=" + exp + "&u=" + user
	if thumb {
		q += "&thumbnail=1"
	}
	return q + "&sig=" + s.sig(id, user, exp, thumb), expires
}

func (s *Service) sig(id, user, exp string, thumb bool) string {
	m := hmac.New(sha256.New, s.urlKey)
	fmt.Fprintf(m, "%s\x00%s\x00%s\x00%t", id, user, exp, thumb)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

var errBadSignature = herald.Errorf(herald.CodeForbidden, "the download URL's signature does not match: use the URL as the server gave it")

// VerifySigned checks a signed URL's parameters for file id: CodeForbidden
// for a bad signature or an expired URL.
func (s *Service) VerifySigned(id, user, exp, sig string, thumb bool) error {
	if !hmac.Equal([]byte(sig), []byte(s.sig(id, user, exp, thumb))) {
		return errBadSignature
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return errBadSignature
	}
	if at := time.Unix(sec, 0); !s.cfg.Now().Before(at) {
		return herald.Errorf(herald.CodeForbidden, "the download URL expired at %s: ask for a new one", at.UTC().Format(time.RFC3339))
	}
	return nil
}

// errorIs reports whether err has code c.
func errorIs(err error, c herald.Code) bool {
	var he *herald.Error
	return errors.As(err, &he) && he.Code == c
}

// attachMargin is how long before its deletion an unsent upload stops
// being sendable.
const attachMargin = time.Minute

// Sweep deletes up to limit uploads that no message refers to and that
// were created more than Grace ago (bytes, thumbnail, record), and returns
// how many. Several nodes may sweep at once: deleting twice is harmless.
func (s *Service) Sweep(ctx context.Context, limit int) (int, error) {
	stale, err := s.st.UnreferencedMedia(ctx, s.cfg.Now().Add(-s.cfg.Grace), limit)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range stale {
		unlock := s.lock(f.ID)
		cur, err := s.st.Media(ctx, f.ID)
		if err == nil && cur.Conv == "" {
			s.discard(ctx, cur)
			n++
		}
		unlock()
		if err != nil && herald.ErrorCode(err) != herald.CodeNotFound {
			return n, err
		}
	}
	s.stats.Swept.Add(int64(n))
	return n, nil
}

// Run sweeps every interval until ctx ends: the lifecycle's loop, which
// the server runs with a context its shutdown cancels.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			n, err := s.Sweep(ctx, 100)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("media: sweeping unsent uploads", "err", err)
				}
				break
			}
			if n < 100 {
				break
			}
		}
	}
}
