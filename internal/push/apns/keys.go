package apns

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"software.sslmate.com/src/go-pkcs12"
)

// LoadP8 reads an APNs signing key: Apple's AuthKey_<KeyID>.p8, a PEM
// "PRIVATE KEY" block holding a PKCS#8 P-256 key. A SEC1 "EC PRIVATE KEY"
// block is accepted too. Errors never include key material.
func LoadP8(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("apns: reading the .p8 key: %w", err)
	}
	key, err := parseP8(data)
	if err != nil {
		return nil, fmt.Errorf("apns: %s: %w", path, err)
	}
	return key, nil
}

func parseP8(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block: expected Apple's .p8 (-----BEGIN PRIVATE KEY-----)")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q; expected PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, errors.New("the key does not parse as PKCS#8")
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is %T; APNs keys are ECDSA P-256", key)
	}
	if err := validateKey(ek); err != nil {
		return nil, fmt.Errorf("the key %w", err)
	}
	return ek, nil
}

// LoadP12 reads an APNs client certificate and its key from a PKCS#12
// (.p12) file as exported from Keychain Access, with modern (PBES2/AES)
// or legacy (3DES, RC2) encryption. The certificate matching the key
// becomes the leaf; any others form the chain.
func LoadP12(path, password string) (*tls.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("apns: reading the .p12 certificate: %w", err)
	}
	c, err := parseP12(data, password)
	if err != nil {
		return nil, fmt.Errorf("apns: %s: %w", path, err)
	}
	return c, nil
}

func parseP12(data []byte, password string) (*tls.Certificate, error) {
	key, leaf, chain, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the private key is %T, which cannot sign", key)
	}
	// DecodeChain takes the first certificate for the leaf; Keychain
	// exports are not always in that order.
	certs := append([]*x509.Certificate{leaf}, chain...)
	for i, c := range certs {
		if pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(signer.Public()) {
			certs[0], certs[i] = certs[i], certs[0]
			break
		}
		if i == len(certs)-1 {
			return nil, errors.New("no certificate matches the private key")
		}
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}
