package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
)

// MediaUpload is a file to upload and send (SendMediaMessage) or upload
// only (UploadMedia).
type MediaUpload struct {
	Kind herald.MediaKind // image, file, audio or video: picks the size limit and the message type
	Name string           // the file's name as shown to people, without folders
	MIME string           // its content type; the server checks it against the bytes
	Size int64            // its exact length
	// Body holds the bytes. It is read at offsets, so an upload resumes
	// from where the server's copy ends (an *os.File, a *bytes.Reader).
	Body io.ReaderAt

	// DurationMS is an audio or video message's length; Width and Height
	// a video's (an image's are measured by the server).
	DurationMS    int64
	Width, Height int

	// UploadID resumes an upload begun earlier (MediaProgress.UploadID,
	// kept by the app across a restart). Empty starts a new one.
	UploadID string

	// Progress, when set, is called after each chunk the server stored,
	// on the uploading goroutine: it must not block for long.
	Progress func(MediaProgress)

	// ChunkBytes is the most bytes sent in one request; a dropped
	// connection costs at most one chunk. Zero means 4 MiB; the server's
	// maximum (proto.UploadStatus.ChunkBytes) caps it.
	ChunkBytes int
}

// MediaProgress reports an upload's progress.
type MediaProgress struct {
	UploadID string
	Sent     int64 // bytes the server holds
	Total    int64
}

// SendMediaMessage uploads up and sends it as a media message to the
// conversation (a user for herald.ConversationPeer, a group for
// herald.ConversationGroup), with msg's optional fields (Extended, Push,
// Mentions, LocalID; its Type and body are set here). The upload survives
// dropped connections and reconnects: each failed chunk is retried from
// the offset the server reports, until ctx ends. Cancelling ctx cancels
// the upload; the server keeps what it received (for a later call with
// UploadID) until its grace period ends. A Push without Content gets the
// server's placeholder ("[Image]", "[File] name"). Errors as UploadMedia
// and SendPeerMessage.
func (c *Client) SendMediaMessage(ctx context.Context, convType herald.ConversationType, convID string, up MediaUpload, msg OutgoingMessage) (*herald.Message, error) {
	md, err := c.UploadMedia(ctx, up)
	if err != nil {
		return nil, err
	}
	msg.Type = up.Kind.MessageType()
	msg.Text, msg.Data, msg.SubType = "", nil, 0
	msg.Media = &herald.Media{FileID: md.FileID, DurationMS: up.DurationMS, Width: up.Width, Height: up.Height}
	if convType == herald.ConversationGroup {
		return c.SendGroupMessage(ctx, convID, msg)
	}
	return c.SendPeerMessage(ctx, convID, msg)
}

// UploadMedia uploads up (as SendMediaMessage does) and returns the file
// as a media message would carry it. Errors: ErrTooLarge (over the kind's
// limit), ErrRateLimited (daily quota), ErrInvalidArgument (a name with a
// folder, a type that does not match the bytes, an image over the pixel
// limit is ErrTooLarge), ErrNotLoggedIn.
func (c *Client) UploadMedia(ctx context.Context, up MediaUpload) (*herald.Media, error) {
	const op = "media_upload"
	if up.Body == nil {
		return nil, opError(op, herald.Errorf(herald.CodeInvalidArgument, "upload has no body"))
	}
	if _, err := herald.ParseMediaKind(string(up.Kind)); err != nil {
		return nil, opError(op, err)
	}
	if err := herald.ValidateMediaName(up.Name); err != nil {
		return nil, opError(op, err)
	}
	var st proto.UploadStatus
	var err error
	if up.UploadID != "" {
		st, err = c.uploadStatus(ctx, up.UploadID)
	} else {
		err = c.mediaRetry(ctx, func(ctx context.Context) error {
			body, _ := json.Marshal(proto.CreateUploadRequest{Kind: string(up.Kind), Name: up.Name, MIME: up.MIME, Size: up.Size})
			return c.mediaDo(ctx, http.MethodPost, proto.MediaUploadsPath, bytes.NewReader(body), int64(len(body)), nil, &st)
		})
	}
	if err != nil {
		return nil, opError(op, err)
	}
	chunk := int64(up.ChunkBytes)
	if chunk <= 0 {
		chunk = 4 << 20
	}
	if st.ChunkBytes > 0 && chunk > st.ChunkBytes {
		chunk = st.ChunkBytes
	}
	if up.Progress != nil {
		up.Progress(MediaProgress{UploadID: st.ID, Sent: st.Offset, Total: st.Size})
	}
	for !st.Complete {
		n := min(chunk, st.Size-st.Offset)
		if st.Offset == 0 {
			n = max(n, min(512, st.Size)) // the server sniffs the first 512 bytes
		}
		offset := st.Offset
		err := c.mediaRetry(ctx, func(ctx context.Context) error {
			var next proto.UploadStatus
			body := io.NewSectionReader(up.Body, offset, n)
			hdr := map[string]string{"Content-Type": proto.ContentTypeChunk, proto.HeaderUploadOffset: strconv.FormatInt(offset, 10)}
			err := c.mediaDo(ctx, http.MethodPatch, proto.MediaUploadPath+url.PathEscape(st.ID), body, n, hdr, &next)
			if errors.Is(err, ErrConflict) || isTransient(err) {
				// Where does the server's copy end? Resume there.
				if cur, serr := c.uploadStatus(ctx, st.ID); serr == nil {
					st = cur
					if cur.Offset != offset || cur.Complete {
						return nil
					}
				}
				return err
			}
			if err == nil {
				st = next
			}
			return err
		})
		if err != nil {
			return nil, opError(op, err)
		}
		if up.Progress != nil {
			up.Progress(MediaProgress{UploadID: st.ID, Sent: st.Offset, Total: st.Size})
		}
	}
	if st.Media == nil {
		return nil, opError(op, fmt.Errorf("server reported upload %s complete without its media", st.ID))
	}
	return st.Media, nil
}

func (c *Client) uploadStatus(ctx context.Context, id string) (proto.UploadStatus, error) {
	var st proto.UploadStatus
	err := c.mediaRetry(ctx, func(ctx context.Context) error {
		return c.mediaDo(ctx, http.MethodGet, proto.MediaUploadPath+url.PathEscape(id), nil, 0, nil, &st)
	})
	return st, err
}

// MediaURL returns a signed URL of fileID (its thumbnail when thumbnail),
// absolute, that downloads it without a token until the returned time:
// for a player or an image view that cannot send headers. ErrForbidden
// when the user may not read the file.
func (c *Client) MediaURL(ctx context.Context, fileID string, thumbnail bool) (string, time.Time, error) {
	var u proto.DownloadURL
	path := proto.MediaFilesPath + url.PathEscape(fileID) + "/url"
	if thumbnail {
		path += "?thumbnail=1"
	}
	err := c.mediaRetry(ctx, func(ctx context.Context) error {
		return c.mediaDo(ctx, http.MethodPost, path, nil, 0, nil, &u)
	})
	if err != nil {
		return "", time.Time{}, opError("media_url", err)
	}
	if strings.HasPrefix(u.URL, "http://") || strings.HasPrefix(u.URL, "https://") {
		return u.URL, time.UnixMilli(u.ExpiresAt), nil // the object store's own
	}
	base, err := c.httpBase()
	if err != nil {
		return "", time.Time{}, err
	}
	return base + u.URL, time.UnixMilli(u.ExpiresAt), nil
}

// DownloadMedia writes the bytes of fileID (its thumbnail when thumbnail)
// to w and returns how many it wrote. A download cut off by a dropped
// connection continues with a range request from where it stopped, until
// ctx ends. ErrForbidden when the user may not read the file (not in its
// conversation), ErrNotFound when there is none.
func (c *Client) DownloadMedia(ctx context.Context, fileID string, thumbnail bool, w io.Writer) (int64, error) {
	path := proto.MediaFilesPath + url.PathEscape(fileID)
	if thumbnail {
		path += "?thumbnail=1"
	}
	var written int64
	err := c.mediaRetry(ctx, func(ctx context.Context) error {
		resp, err := c.mediaRequest(ctx, http.MethodGet, path, nil, 0, map[string]string{"Range": rangeFrom(written)}, true)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if written > 0 && resp.StatusCode != http.StatusPartialContent {
			return fmt.Errorf("server answered %d to a range request", resp.StatusCode)
		}
		n, err := io.Copy(w, resp.Body)
		written += n
		if err != nil {
			return transientError{err}
		}
		return nil
	})
	if err != nil {
		return written, opError("media_download", err)
	}
	return written, nil
}

func rangeFrom(n int64) string {
	if n == 0 {
		return ""
	}
	return "bytes=" + strconv.FormatInt(n, 10) + "-"
}

// transientError is a failure worth retrying: the network, or a server
// that is restarting.
type transientError struct{ err error }

func (t transientError) Error() string { return t.err.Error() }
func (t transientError) Unwrap() error { return t.err }

func isTransient(err error) bool {
	var t transientError
	return errors.As(err, &t)
}

// mediaRetry runs fn until it succeeds, fails for a reason a retry cannot
// mend, or ctx ends; between attempts it waits ReconnectMin, doubling up
// to ReconnectMax.
func (c *Client) mediaRetry(ctx context.Context, fn func(ctx context.Context) error) error {
	wait := c.opts.ReconnectMin
	for {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if _, ok := ctx.Deadline(); !ok {
			rctx, cancel = context.WithTimeout(ctx, c.opts.RequestTimeout)
		}
		err := fn(rctx)
		cancel()
		if err == nil || !isTransient(err) && !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		c.log.Debug("media request failed; retrying", "err", err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, c.opts.ReconnectMax)
	}
}

// httpBase is the server's HTTP address: the WebSocket URL's scheme
// mapped to http(s), without its path.
func (c *Client) httpBase() (string, error) {
	if c.urlErr != nil {
		return "", c.urlErr
	}
	u, err := url.Parse(c.url)
	if err != nil {
		return "", err
	}
	u.Scheme = strings.Replace(u.Scheme, "ws", "http", 1)
	u.Path, u.RawQuery = "", ""
	return u.String(), nil
}

// mediaDo makes one request with the session's token and decodes a JSON
// answer into out.
func (c *Client) mediaDo(ctx context.Context, method, path string, body io.Reader, length int64, hdr map[string]string, out any) error {
	resp, err := c.mediaRequest(ctx, method, path, body, length, hdr, false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return transientError{fmt.Errorf("reading the answer: %w", err)}
	}
	return nil
}

// mediaRequest sends a request; an answer with an error status becomes
// the server's error (a 503 or a network failure a transientError).
func (c *Client) mediaRequest(ctx context.Context, method, path string, body io.Reader, length int64, hdr map[string]string, anyStatus bool) (*http.Response, error) {
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	tok := s.token
	c.mu.Unlock()
	base, err := c.httpBase()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = length
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for k, v := range hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	hc := c.opts.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, transientError{err}
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	var e proto.Error
	if derr := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e); derr != nil || e.Code == "" {
		e = proto.Error{Code: string(herald.CodeInternal), Message: "HTTP " + resp.Status}
	}
	werr := wireError(method+" "+path, &e)
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout {
		return nil, transientError{werr}
	}
	return nil, werr
}
