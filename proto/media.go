package proto

import "github.com/herald-im/herald"

// The media HTTP API (docs/protocol.md, "Media"), served beside Path on the
// client address. Every request but a signed download carries the
// session's login token: "Authorization: Bearer <token>".
const (
	MediaUploadsPath = "/media/uploads"  // POST CreateUploadRequest -> UploadStatus (201)
	MediaUploadPath  = "/media/uploads/" // + id: HEAD/GET status, PATCH a chunk, DELETE
	MediaFilesPath   = "/media/files/"   // + id: GET the bytes (?thumbnail=1); + id + "/url": POST -> DownloadURL

	// HeaderUploadOffset is, on a PATCH, the offset its chunk starts at
	// (the upload's offset); on answers, the upload's offset after it.
	HeaderUploadOffset = "Upload-Offset"
	// HeaderUploadLength is the upload's declared size, on answers.
	HeaderUploadLength = "Upload-Length"
	// ContentTypeChunk is the content type of a PATCH body.
	ContentTypeChunk = "application/offset+octet-stream"
)

// CreateUploadRequest starts an upload: what it is for (Kind: "image",
// "file", "audio", "video"), the file's name, its content type and its
// exact length in bytes.
type CreateUploadRequest struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	MIME string `json:"mime"`
	Size int64  `json:"size"`
}

// UploadStatus is an upload as its owner sees it. Offset is how many bytes
// the server holds: the next chunk starts there. Media is set once the
// upload is complete: what a media message carries (send it with its
// FileID).
type UploadStatus struct {
	ID       string        `json:"id"`
	Kind     string        `json:"kind"`
	Name     string        `json:"name"`
	MIME     string        `json:"mime"`
	Size     int64         `json:"size"`
	Offset   int64         `json:"offset"`
	Complete bool          `json:"complete"`
	Media    *herald.Media `json:"media,omitempty"`
	// ChunkBytes is the largest chunk the server takes in one PATCH.
	ChunkBytes int64 `json:"chunk_bytes"`
}

// DownloadURL is a signed download URL and when it stops working (ms since
// the Unix epoch): relative to the server's address, or, when the server
// keeps files in an object store, an absolute presigned URL of the store.
type DownloadURL struct {
	URL       string `json:"url"`
	ExpiresAt int64  `json:"expires_at"`
}
