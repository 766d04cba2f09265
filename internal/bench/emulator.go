package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/herald-im/herald/internal/emulator"
)

// The app every bench device registers for, and the credentials the
// emulators accept for it.
const (
	benchApp        = "com.herald.bench"
	benchKeyID      = "BENCHKEY01"
	benchTeamID     = "BENCHTEAM1"
	benchFCMProject = "herald-bench"
	benchHMSAppID   = "100000042"
)

// Providers are the push vendors the bench can push through.
var Providers = []string{"apns", "fcm", "hms", "webpush"}

// vendor is what the bench uses of one vendor's emulator.
type vendor interface {
	SetDelay(d time.Duration)
	OnAccept(fn func(*emulator.Notification))
	Stats() emulator.Stats
}

// Emulator is one push vendor's emulator running in the bench process,
// standing in for the vendor, and a push configuration file
// (HERALD_PUSH_CONFIG) that points a server at it with that vendor's
// credentials, as a real deployment points at the vendor. Every vendor is
// served on the APNs emulator's listener (Mount), which is started even
// when another vendor is chosen. The emulator lives here rather than in
// the server so that receipts are timed on the generator's clock and the
// server pays for its HTTP/2 client only, as it would in production.
type Emulator struct {
	Provider   string         // apns, fcm, hms or webpush
	APNs       *emulator.APNs // the listener; the vendor when Provider is apns
	FCM        *emulator.FCM
	HMS        *emulator.HMS
	WebPush    *emulator.WebPush
	ConfigFile string // the server's HERALD_PUSH_CONFIG

	vendor   vendor
	vapidPub []byte // webpush: the server's VAPID public key, uncompressed
	dir      string
}

// StartEmulator starts provider's emulator on a free loopback port that
// holds every answer back by delay (the emulated round trip to the
// vendor), and writes the credentials, the emulator's TLS certificate and
// the push configuration into a temporary folder. maxStreams is the APNs
// listener's SETTINGS_MAX_CONCURRENT_STREAMS (zero: the emulator's
// default, 1000); it bounds every vendor's requests per connection. Close
// removes the folder.
func StartEmulator(provider string, delay time.Duration, maxStreams uint32) (*Emulator, error) {
	apnsKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	apns := emulator.New(emulator.Config{
		Keys:                 map[string]emulator.Key{benchKeyID: {TeamID: benchTeamID, Public: &apnsKey.PublicKey}},
		MaxConcurrentStreams: maxStreams,
		InboxLimit:           -1, // the bench sees pushes through OnAccept only
	})
	e := &Emulator{Provider: provider, APNs: apns}
	switch provider {
	case "apns":
		e.vendor = apns
	case "fcm":
		e.FCM = emulator.NewFCM(emulator.FCMConfig{InboxLimit: -1})
		e.vendor = e.FCM
	case "hms":
		e.HMS = emulator.NewHMS(emulator.HMSConfig{InboxLimit: -1})
		e.vendor = e.HMS
	case "webpush":
		e.WebPush = emulator.NewWebPush(emulator.WebPushConfig{InboxLimit: -1})
		e.vendor = e.WebPush
	default:
		return nil, fmt.Errorf("provider %q: want one of %v", provider, Providers)
	}
	e.vendor.SetDelay(delay)
	if err := apns.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	if err := e.configure(apnsKey); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// configure mounts the chosen vendor on the listener and writes its
// credentials and the push configuration file.
func (e *Emulator) configure(apnsKey *ecdsa.PrivateKey) error {
	var err error
	if e.dir, err = os.MkdirTemp("", "herald-bench-"+e.Provider+"-"); err != nil {
		return err
	}
	files := map[string][]byte{"ca.pem": e.APNs.CACertPEM()}
	var conf map[string]any
	switch e.Provider {
	case "apns":
		der, err := x509.MarshalPKCS8PrivateKey(apnsKey)
		if err != nil {
			return err
		}
		files["AuthKey_"+benchKeyID+".p8"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		conf = map[string]any{"apns": []map[string]string{{
			"bundle_id": benchApp, "team_id": benchTeamID, "key_id": benchKeyID,
			"key_file": "AuthKey_" + benchKeyID + ".p8", "ca_file": "ca.pem",
			"production_url": e.APNs.URL(), "development_url": e.APNs.URL(),
		}}}
	case "fcm":
		e.FCM.Mount(e.APNs)
		sa, err := e.FCM.ServiceAccount(benchFCMProject)
		if err != nil {
			return err
		}
		files["service-account.json"] = sa
		conf = map[string]any{"fcm": []map[string]any{{
			"service_account_file": "service-account.json", "apps": []string{benchApp},
			"url": e.FCM.URL(), "ca_file": "ca.pem",
		}}}
	case "hms":
		e.HMS.Mount(e.APNs)
		var b [24]byte
		rand.Read(b[:])
		secret := hex.EncodeToString(b[:])
		e.HMS.AddApp(benchHMSAppID, secret)
		files["hms.secret"] = []byte(secret + "\n")
		conf = map[string]any{"hms": []map[string]any{{
			"app_id": benchHMSAppID, "app_secret_file": "hms.secret", "packages": []string{benchApp},
			"token_url": e.HMS.URL() + "/oauth2/v3/token", "push_url": e.HMS.URL(), "ca_file": "ca.pem",
		}}}
	case "webpush":
		e.WebPush.Mount(e.APNs)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		pub, err := key.PublicKey.ECDH()
		if err != nil {
			return err
		}
		e.vapidPub = pub.Bytes()
		files["vapid.pem"] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
		// The subscriptions' endpoints are on loopback: a push service on
		// the operator's network, as far as the server can tell.
		conf = map[string]any{"webpush": map[string]any{
			"subject": "mailto:bench@herald.invalid", "vapid_key_file": "vapid.pem",
			"allow_private_endpoints": true, "apps": []string{benchApp}, "ca_file": "ca.pem",
		}}
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	files["push.json"] = b
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(e.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	e.ConfigFile = filepath.Join(e.dir, "push.json")
	return nil
}

// SetDelay sets the chosen vendor's answer delay: the round trip to it.
func (e *Emulator) SetDelay(d time.Duration) { e.vendor.SetDelay(d) }

// OnAccept sets the chosen vendor's accept hook; nil removes it.
func (e *Emulator) OnAccept(fn func(*emulator.Notification)) { e.vendor.OnAccept(fn) }

// Stats are the chosen vendor's counters; Connections are the listener's,
// which every vendor shares.
func (e *Emulator) Stats() emulator.Stats {
	s := e.vendor.Stats()
	if e.Provider != "apns" {
		s.Connections = e.APNs.Stats().Connections
	}
	return s
}

// device is what user's device registers: a token of the chosen vendor,
// distinct per user (Web Push: a new subscription made with the server's
// VAPID key, its JSON the token), the bench app and an environment.
func (e *Emulator) device(user string) (token, env string, err error) {
	sum := sha256.Sum256([]byte(user))
	switch e.Provider {
	case "apns":
		return hex.EncodeToString(sum[:]), "production", nil
	case "fcm", "hms":
		// Letters, digits and a colon, as an FCM registration token.
		return "bench:" + hex.EncodeToString(sum[:]), "", nil
	default:
		sub, err := e.WebPush.Subscribe(e.vapidPub)
		if err != nil {
			return "", "", err
		}
		return sub.Token(), "", nil
	}
}

// Close stops the emulators and removes their files.
func (e *Emulator) Close() error {
	err := e.APNs.Close()
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
	return err
}

// notifKey is the form in which receipts and expected pushes are matched:
// the 16 bytes of a notification ID, whichever form the vendor carried it
// in (emulator.NotificationKey).
func notifKey(id string) ([16]byte, bool) { return emulator.NotificationKey(id) }
