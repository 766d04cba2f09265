package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/herald-im/herald"
)

// S3 is Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph,
// SeaweedFS), through minio-go, for several nodes sharing one store of
// files. Objects are under Prefix: "blobs/ID" for a finished file, and
// "uploads/ID/OFFSET" (OFFSET zero-padded to 20 digits) for each chunk of
// an unfinished one. A chunk is first spooled to a local temporary file
// (at most one chunk, proto's 16 MiB), so its exact length is known when
// it is stored and the bytes read before a dropped connection are stored
// too. Commit streams the chunks, in order, into the blob (one pass
// through the node, never whole in memory: minio-go holds one part of a
// large object at a time) and deletes them.
//
// Objects are written with an unsigned payload (DisableContentSha256):
// Herald hashes every file itself, TLS protects the bytes in transit, and
// it spares a second SHA-256 pass and the aws-chunked framing that some
// S3-compatible servers do not decode.
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
	spool  string // folder for chunk spooling
}

// OpenS3 connects to the store a URL names:
// http(s)://ACCESS_KEY:SECRET_KEY@host:port/bucket[/prefix][?region=R].
// http means no TLS. The bucket must exist. spool is a local folder for
// chunks in transit.
func OpenS3(ctx context.Context, rawURL, spool string) (*S3, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("HERALD_MEDIA_S3: not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("HERALD_MEDIA_S3: scheme must be http or https")
	}
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if bucket == "" || u.User == nil {
		return nil, fmt.Errorf("HERALD_MEDIA_S3: want http(s)://ACCESS_KEY:SECRET_KEY@host:port/bucket[/prefix]")
	}
	secret, _ := u.User.Password()
	c, err := minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(u.User.Username(), secret, ""),
		Secure: u.Scheme == "https", Region: u.Query().Get("region"),
	})
	if err != nil {
		return nil, fmt.Errorf("HERALD_MEDIA_S3: %w", err)
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, err
	}
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("HERALD_MEDIA_S3: bucket %q at %s: %w", bucket, u.Host, err)
	}
	if !ok {
		return nil, fmt.Errorf("HERALD_MEDIA_S3: bucket %q does not exist at %s", bucket, u.Host)
	}
	return &S3{c: c, bucket: bucket, prefix: prefix, spool: spool}, nil
}

func (s *S3) blobKey(id string) string  { return s.prefix + "blobs/" + id }
func (s *S3) partsKey(id string) string { return s.prefix + "uploads/" + id + "/" }
func partName(offset int64) string      { return fmt.Sprintf("%020d", offset) }
func partOffset(name string) (int64, error) {
	return strconv.ParseInt(name[strings.LastIndexByte(name, '/')+1:], 10, 64)
}

type part struct {
	key          string
	offset, size int64
}

// parts lists the chunks of upload id in offset order.
func (s *S3) parts(ctx context.Context, id string) ([]part, error) {
	var out []part
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.partsKey(id), Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		off, err := partOffset(o.Key)
		if err != nil {
			continue
		}
		out = append(out, part{key: o.Key, offset: off, size: o.Size})
	}
	slices.SortFunc(out, func(a, b part) int { return int(a.offset - b.offset) })
	return out, nil
}

// Append implements Blobs.
func (s *S3) Append(ctx context.Context, id string, offset int64, r io.Reader) (int64, error) {
	if !ValidID(id) {
		return 0, herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	parts, err := s.parts(ctx, id)
	if err != nil {
		return 0, err
	}
	var have int64
	for _, p := range parts {
		if p.offset >= offset {
			// Left by a chunk whose record was not written.
			if err := s.c.RemoveObject(ctx, s.bucket, p.key, minio.RemoveObjectOptions{}); err != nil {
				return 0, err
			}
			continue
		}
		have = max(have, p.offset+p.size)
	}
	if have != offset {
		return 0, herald.Errorf(herald.CodeNotFound, "upload %q holds %d bytes, not %d", id, have, offset)
	}
	f, err := os.CreateTemp(s.spool, "chunk-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, rerr := io.Copy(f, ctxReader{ctx, r})
	if n == 0 {
		return 0, rerr
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := s.c.PutObject(context.WithoutCancel(ctx), s.bucket, s.partsKey(id)+partName(offset), f, n,
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true}); err != nil {
		return 0, err
	}
	return n, rerr
}

// Commit implements Blobs.
func (s *S3) Commit(ctx context.Context, id string) error {
	parts, err := s.parts(ctx, id)
	if err != nil {
		return err
	}
	var size, at int64
	for _, p := range parts {
		if p.offset != at {
			return fmt.Errorf("upload %s: chunk at %d, expected %d", id, p.offset, at)
		}
		at += p.size
		size += p.size
	}
	r := &partsReader{ctx: ctx, s: s, parts: parts}
	defer r.Close()
	if _, err := s.c.PutObject(ctx, s.bucket, s.blobKey(id), r, size, minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true}); err != nil {
		return err
	}
	for _, p := range parts {
		if err := s.c.RemoveObject(ctx, s.bucket, p.key, minio.RemoveObjectOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// partsReader reads the chunks one after another, opening each in turn.
type partsReader struct {
	ctx   context.Context
	s     *S3
	parts []part
	cur   *minio.Object
}

func (p *partsReader) Read(b []byte) (int, error) {
	for {
		if p.cur == nil {
			if len(p.parts) == 0 {
				return 0, io.EOF
			}
			o, err := p.s.c.GetObject(p.ctx, p.s.bucket, p.parts[0].key, minio.GetObjectOptions{})
			if err != nil {
				return 0, err
			}
			p.cur, p.parts = o, p.parts[1:]
		}
		n, err := p.cur.Read(b)
		if errors.Is(err, io.EOF) {
			p.cur.Close()
			p.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (p *partsReader) Close() {
	if p.cur != nil {
		p.cur.Close()
	}
}

// Put implements Blobs.
func (s *S3) Put(ctx context.Context, id string, r io.Reader) (int64, error) {
	if !ValidID(id) {
		return 0, herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	f, err := os.CreateTemp(s.spool, "put-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := s.c.PutObject(ctx, s.bucket, s.blobKey(id), f, n, minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true}); err != nil {
		return 0, err
	}
	return n, nil
}

// Open implements Blobs.
func (s *S3) Open(ctx context.Context, id string) (Blob, error) {
	if !ValidID(id) {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	o, err := s.c.GetObject(ctx, s.bucket, s.blobKey(id), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, herald.Errorf(herald.CodeNotFound, "no stored file %q", id)
		}
		return nil, err
	}
	return &s3Blob{Object: o, size: st.Size, mod: st.LastModified}, nil
}

type s3Blob struct {
	*minio.Object
	size int64
	mod  time.Time
}

func (b *s3Blob) Size() int64        { return b.size }
func (b *s3Blob) ModTime() time.Time { return b.mod }

// Delete implements Blobs.
func (s *S3) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	parts, err := s.parts(ctx, id)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := s.c.RemoveObject(ctx, s.bucket, p.key, minio.RemoveObjectOptions{}); err != nil {
			return err
		}
	}
	return s.c.RemoveObject(ctx, s.bucket, s.blobKey(id), minio.RemoveObjectOptions{})
}

// Presign returns a URL that downloads blob id straight from the store
// until ttl has passed, answered with contentType and disposition.
func (s *S3) Presign(ctx context.Context, id string, ttl time.Duration, contentType, disposition string) (string, error) {
	q := url.Values{}
	q.Set("response-content-type", contentType)
	q.Set("response-content-disposition", disposition)
	u, err := s.c.PresignedGetObject(ctx, s.bucket, s.blobKey(id), ttl, q)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}
