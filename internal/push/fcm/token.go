package fcm

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
)

// ServiceAccount is what Herald reads from a service-account JSON key: the
// fields it checks at start. The key itself stays in the JSON, which
// golang.org/x/oauth2/google signs with.
type ServiceAccount struct {
	ProjectID    string
	ClientEmail  string
	PrivateKeyID string
	TokenURI     string // "" means Google's
}

// ParseServiceAccount checks a service-account JSON key so that a file
// that cannot work is refused at start, not at the first push. The error
// says what is wrong and never quotes the key.
func ParseServiceAccount(b []byte) (*ServiceAccount, error) {
	var f struct {
		Type         string `json:"type"`
		ProjectID    string `json:"project_id"`
		PrivateKeyID string `json:"private_key_id"`
		PrivateKey   string `json:"private_key"`
		ClientEmail  string `json:"client_email"`
		TokenURI     string `json:"token_uri"`
	}
	if len(b) == 0 {
		return nil, errors.New("is empty")
	}
	if err := json.Unmarshal(b, &f); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("is not JSON (offset %d): %v", se.Offset, se)
		}
		return nil, fmt.Errorf("is not a service-account JSON key: %v", err)
	}
	switch {
	case f.Type != "service_account":
		return nil, fmt.Errorf("has type %q; want \"service_account\" (a Firebase service-account key, from Project settings > Service accounts)", f.Type)
	case f.ClientEmail == "":
		return nil, errors.New("has no client_email")
	case f.PrivateKey == "":
		return nil, errors.New("has no private_key")
	case f.ProjectID == "":
		return nil, errors.New("has no project_id")
	}
	block, _ := pem.Decode([]byte(f.PrivateKey))
	if block == nil {
		return nil, errors.New("private_key is not PEM")
	}
	var key any
	var err error
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return nil, errors.New("private_key does not parse as a PKCS#8 or PKCS#1 key")
		}
	}
	if _, ok := key.(*rsa.PrivateKey); !ok {
		return nil, fmt.Errorf("private_key is a %T, not an RSA key", key)
	}
	if f.TokenURI != "" {
		u, err := url.Parse(f.TokenURI)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("token_uri %q is not an https URL", f.TokenURI)
		}
	}
	return &ServiceAccount{ProjectID: f.ProjectID, ClientEmail: f.ClientEmail, PrivateKeyID: f.PrivateKeyID, TokenURI: f.TokenURI}, nil
}
