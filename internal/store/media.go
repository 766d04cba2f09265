package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/herald-im/herald"
)

// Media uploads (herald.MediaFile): the record of each upload, kept by every
// backend as a few indexed fields (ID, Owner, CreatedAt, Size, Received,
// whether a message refers to it) beside the whole record encoded by
// EncodeMediaFile, so a new field needs no schema change. The bytes are
// not here: internal/media's blob store holds them.

// mediaRecord is the encoded form of a MediaFile.
type mediaRecord struct {
	ID        string `json:"id"`
	Owner     string `json:"owner"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	MIME      string `json:"mime"`
	Size      int64  `json:"size"`
	Received  int64  `json:"received"`
	HashState []byte `json:"hash_state,omitempty"`
	Sniffed   string `json:"sniffed,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	Complete  bool   `json:"complete,omitempty"`
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	Thumb     bool   `json:"thumb,omitempty"`
	ThumbW    int    `json:"thumb_w,omitempty"`
	ThumbH    int    `json:"thumb_h,omitempty"`
	CreatedAt int64  `json:"created_at"` // ms
	Conv      string `json:"conv,omitempty"`
	Attached  int64  `json:"attached_at,omitempty"` // ms
}

// EncodeMediaFile returns the record backends store for f.
func EncodeMediaFile(f *herald.MediaFile) []byte {
	b, err := json.Marshal(mediaRecord{
		ID: f.ID, Owner: f.Owner, Kind: string(f.Kind), Name: f.Name, MIME: f.MIME, Size: f.Size,
		Received: f.Received, HashState: f.HashState, Sniffed: f.Sniffed, SHA256: f.SHA256, Complete: f.Complete,
		Width: f.Width, Height: f.Height, Thumb: f.Thumb, ThumbW: f.ThumbW, ThumbH: f.ThumbH,
		CreatedAt: f.CreatedAt.UnixMilli(), Conv: f.Conv, Attached: millisOrZero(f.AttachedAt),
	})
	if err != nil {
		panic(err) // strings, numbers and bytes always encode
	}
	return b
}

// DecodeMediaFile reads a record made by EncodeMediaFile.
func DecodeMediaFile(b []byte) (herald.MediaFile, error) {
	var r mediaRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return herald.MediaFile{}, fmt.Errorf("media record: %w", err)
	}
	return herald.MediaFile{
		ID: r.ID, Owner: r.Owner, Kind: herald.MediaKind(r.Kind), Name: r.Name, MIME: r.MIME, Size: r.Size,
		Received: r.Received, HashState: r.HashState, Sniffed: r.Sniffed, SHA256: r.SHA256, Complete: r.Complete,
		Width: r.Width, Height: r.Height, Thumb: r.Thumb, ThumbW: r.ThumbW, ThumbH: r.ThumbH,
		CreatedAt: time.UnixMilli(r.CreatedAt).UTC(), Conv: r.Conv, AttachedAt: timeOrZero(r.Attached),
	}, nil
}

// ValidateMediaFile checks what every backend relies on before storing f.
func ValidateMediaFile(f *herald.MediaFile) error {
	switch {
	case f.ID == "" || len(f.ID) > 64:
		return herald.Errorf(herald.CodeInvalidArgument, "media: ID must be 1-64 bytes")
	case f.Owner == "":
		return herald.Errorf(herald.CodeInvalidArgument, "media %q: owner is empty", f.ID)
	case f.CreatedAt.IsZero():
		return herald.Errorf(herald.CodeInvalidArgument, "media %q: created_at is not set", f.ID)
	case f.Size < 0 || f.Received < 0 || f.Received > f.Size:
		return herald.Errorf(herald.CodeInvalidArgument, "media %q: received %d of size %d", f.ID, f.Received, f.Size)
	}
	return nil
}

// MediaNotFound is the CodeNotFound of Media and UpdateMedia.
func MediaNotFound(id string) error {
	return herald.Errorf(herald.CodeNotFound, "no upload %q", id)
}

// MediaConflict is UpdateMedia's CodeConflict.
func MediaConflict(id string, from int64) error {
	return herald.Errorf(herald.CodeConflict, "upload %q is no longer at offset %d: ask for its offset and resume there", id, from)
}

func millisOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func timeOrZero(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
