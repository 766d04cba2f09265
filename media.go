package herald

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Media message types: a message whose body is a file uploaded through the
// server's media API (docs/protocol.md, "Media"). The numbers are ZIM's
// (ZIMMessageType).
const (
	MessageImage MessageType = 11
	MessageFile  MessageType = 12
	MessageAudio MessageType = 13
	MessageVideo MessageType = 14
)

// IsMedia reports whether t is one of the media message types.
func (t MessageType) IsMedia() bool {
	return t >= MessageImage && t <= MessageVideo
}

// MediaKind is what an upload is for: the media message type that will
// carry it. Each kind has its own size limit.
type MediaKind string

const (
	KindImage MediaKind = "image"
	KindFile  MediaKind = "file"
	KindAudio MediaKind = "audio"
	KindVideo MediaKind = "video"
)

// ParseMediaKind checks a kind named on the wire.
func ParseMediaKind(s string) (MediaKind, error) {
	switch k := MediaKind(s); k {
	case KindImage, KindFile, KindAudio, KindVideo:
		return k, nil
	}
	return "", Errorf(CodeInvalidArgument, "kind %q is not image, file, audio or video", s)
}

// MessageType is the media message type that carries a file of kind k.
func (k MediaKind) MessageType() MessageType {
	switch k {
	case KindImage:
		return MessageImage
	case KindAudio:
		return MessageAudio
	case KindVideo:
		return MessageVideo
	}
	return MessageFile
}

// Media is what a media message carries about its file. The server fills
// every field but DurationMS (and, for video, Width and Height) from the
// upload it names: a sender cannot claim another file's hash or size.
type Media struct {
	FileID string `json:"file_id"`          // the upload's ID (MediaFile.ID)
	Name   string `json:"name"`             // the file name the sender gave, without any folder
	Size   int64  `json:"size"`             // bytes
	MIME   string `json:"mime"`             // the content type, checked against the bytes
	SHA256 string `json:"sha256,omitempty"` // hex SHA-256 of the bytes
	// Width and Height are an image's (measured by the server) or a
	// video's (as the sender gives them), in pixels.
	Width  int `json:"width,omitempty"`
	Height int `json:"height,omitempty"`
	// DurationMS is an audio or video message's length, as the sender
	// gives it.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Thumbnail is true when the server made a thumbnail of the image
	// (downloaded with the file ID and thumbnail=1), ThumbWidth x
	// ThumbHeight pixels.
	Thumbnail   bool `json:"thumbnail,omitempty"`
	ThumbWidth  int  `json:"thumb_width,omitempty"`
	ThumbHeight int  `json:"thumb_height,omitempty"`
}

// MediaFile is an upload as the server keeps it: from its creation
// (Received 0) through its chunks to its completion, and then while a
// message refers to it.
type MediaFile struct {
	ID       string    // random, URL-safe; names the blob
	Owner    string    // the user who uploaded it; only they may send it
	Kind     MediaKind // what it is for: picks the size limit and the message type
	Name     string    // ValidateMediaName's
	MIME     string    // declared at creation; checked against the bytes at completion
	Size     int64     // declared total length in bytes
	Received int64     // bytes stored so far: the offset the next chunk starts at
	// HashState is the SHA-256 state after Received bytes (the digest's
	// MarshalBinary), so a chunk sent after a reconnect, even to another
	// node, continues the hash without reading the bytes again.
	HashState []byte
	Sniffed   string // the content type detected from the first bytes
	SHA256    string // hex, once complete
	Complete  bool
	Width     int // images: measured at completion
	Height    int
	Thumb     bool // a thumbnail blob exists (ID + ".thumb")
	ThumbW    int
	ThumbH    int
	CreatedAt time.Time
	// Conv is the conversation of the message that refers to the file,
	// and AttachedAt when it was last sent, the time of its stored
	// message (empty Conv: no message yet). Who may download the file
	// follows from them: a peer conversation's two users, or a group's
	// members who joined at or before AttachedAt. An
	// upload with no Conv past its grace period is deleted.
	Conv       string
	AttachedAt time.Time
}

// MaxMediaNameBytes is the longest file name kept with an upload.
const MaxMediaNameBytes = 255

// ValidateMediaName checks a file name given with an upload: 1-255 bytes
// of UTF-8, no folder part (no '/', '\\'), no control characters, not "."
// or "..". A name is shown to people and used in Content-Disposition; it
// never names a file on the server's disk.
func ValidateMediaName(name string) error {
	switch {
	case name == "":
		return Errorf(CodeInvalidArgument, "file name is empty")
	case len(name) > MaxMediaNameBytes:
		return Errorf(CodeTooLarge, "file name is %d bytes; the limit is %d", len(name), MaxMediaNameBytes)
	case !utf8.ValidString(name):
		return Errorf(CodeInvalidArgument, "file name is not valid UTF-8")
	case name == "." || name == "..":
		return Errorf(CodeInvalidArgument, "file name %q is not a file name", name)
	case strings.ContainsAny(name, `/\`):
		return Errorf(CodeInvalidArgument, "file name %q has a folder part ('/' or '\\'): give the name alone", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return Errorf(CodeInvalidArgument, "file name has control character %U", r)
		}
	}
	return nil
}

// MediaPlaceholder is the push text of a media message whose sender gave
// no push content: "[Image]", "[File] name", "[Audio]", "[Video]".
// Placeholders maps a type to another language's bracketed word.
func MediaPlaceholder(m *Message, placeholders map[MessageType]string) string {
	word := placeholders[m.Type]
	if word == "" {
		switch m.Type {
		case MessageImage:
			word = "[Image]"
		case MessageFile:
			word = "[File]"
		case MessageAudio:
			word = "[Audio]"
		case MessageVideo:
			word = "[Video]"
		default:
			return ""
		}
	}
	if m.Type == MessageFile && m.Media != nil && m.Media.Name != "" {
		return word + " " + m.Media.Name
	}
	return word
}
