package h2

// HPACK literals written by hand, for the fields that must not enter the
// dynamic table (the path with its device token, apns-id, the constant
// fields of Options.Header). Strings are raw, not Huffman-coded: a few
// more bytes in a write cost less than coding them here and decoding them
// at the peer. Fields worth indexing go through x/net's hpack.Encoder,
// which owns the dynamic table; a literal without indexing leaves that
// table as it is, so the two can share one header block.

// appendLiteral appends "literal header field without indexing" for
// name: value, naming the field by its static-table index when it has one.
func appendLiteral(b []byte, name, value string) []byte {
	if i, ok := staticNames[name]; ok {
		return appendLiteralIndexedName(b, i, value)
	}
	b = append(b, 0)
	b = appendString(b, name)
	return appendString(b, value)
}

// appendLiteralIndexedName appends "literal header field without
// indexing" whose name is static-table entry i.
func appendLiteralIndexedName(b []byte, i uint64, value string) []byte {
	b = appendVarInt(b, 4, 0, i)
	return appendString(b, value)
}

func appendString(b []byte, s string) []byte {
	b = appendVarInt(b, 7, 0, uint64(len(s))) // H bit 0: raw
	return append(b, s...)
}

// appendVarInt appends v as an HPACK integer with an n-bit prefix, the
// byte's other bits set to first (RFC 7541 section 5.1).
func appendVarInt(b []byte, n uint, first byte, v uint64) []byte {
	k := uint64(1)<<n - 1
	if v < k {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(k))
	for v -= k; v >= 128; v >>= 7 {
		b = append(b, byte(0x80|v&0x7f))
	}
	return append(b, byte(v))
}

// staticNames maps the names of HPACK's static table (RFC 7541 appendix
// A) to their first index.
var staticNames = map[string]uint64{
	":authority": 1, ":method": 2, ":path": 4, ":scheme": 6, ":status": 8,
	"accept-charset": 15, "accept-encoding": 16, "accept-language": 17, "accept-ranges": 18,
	"accept": 19, "access-control-allow-origin": 20, "age": 21, "allow": 22, "authorization": 23,
	"cache-control": 24, "content-disposition": 25, "content-encoding": 26, "content-language": 27,
	"content-length": 28, "content-location": 29, "content-range": 30, "content-type": 31,
	"cookie": 32, "date": 33, "etag": 34, "expect": 35, "expires": 36, "from": 37, "host": 38,
	"if-match": 39, "if-modified-since": 40, "if-none-match": 41, "if-range": 42,
	"if-unmodified-since": 43, "last-modified": 44, "link": 45, "location": 46, "max-forwards": 47,
	"proxy-authenticate": 48, "proxy-authorization": 49, "range": 50, "referer": 51, "refresh": 52,
	"retry-after": 53, "server": 54, "set-cookie": 55, "strict-transport-security": 56,
	"transfer-encoding": 57, "user-agent": 58, "vary": 59, "via": 60, "www-authenticate": 61,
}
