package emulator

import "net/http"

// The reason strings APNs answers with, in the JSON body {"reason": ...}.
const (
	BadCollapseId               = "BadCollapseId"
	BadDeviceToken              = "BadDeviceToken"
	BadExpirationDate           = "BadExpirationDate"
	BadMessageId                = "BadMessageId"
	BadPriority                 = "BadPriority"
	BadTopic                    = "BadTopic"
	DeviceTokenNotForTopic      = "DeviceTokenNotForTopic"
	DuplicateHeaders            = "DuplicateHeaders"
	IdleTimeout                 = "IdleTimeout"
	InvalidPushType             = "InvalidPushType"
	MissingDeviceToken          = "MissingDeviceToken"
	MissingTopic                = "MissingTopic"
	PayloadEmpty                = "PayloadEmpty"
	TopicDisallowed             = "TopicDisallowed"
	BadCertificate              = "BadCertificate"
	BadCertificateEnvironment   = "BadCertificateEnvironment"
	ExpiredProviderToken        = "ExpiredProviderToken"
	Forbidden                   = "Forbidden"
	InvalidProviderToken        = "InvalidProviderToken"
	MissingProviderToken        = "MissingProviderToken"
	BadEnvironmentKeyIdInToken  = "BadEnvironmentKeyIdInToken"
	BadPath                     = "BadPath"
	MethodNotAllowed            = "MethodNotAllowed"
	ExpiredToken                = "ExpiredToken"
	Unregistered                = "Unregistered"
	PayloadTooLarge             = "PayloadTooLarge"
	TooManyProviderTokenUpdates = "TooManyProviderTokenUpdates"
	TooManyRequests             = "TooManyRequests"
	InternalServerError         = "InternalServerError"
	ServiceUnavailable          = "ServiceUnavailable"
	Shutdown                    = "Shutdown"

	// HTTP2Required is the emulator's own answer (505) to a push sent over
	// HTTP/1.1; Apple's service speaks only HTTP/2.
	HTTP2Required = "HTTP2Required"
	// BadBackgroundPush is the emulator's own answer (400) to a background
	// push whose aps lacks "content-available": 1 or carries an alert, a
	// badge or a sound: Apple takes such a push as misconfigured and may
	// not deliver it; the emulator refuses it outright.
	BadBackgroundPush = "BadBackgroundPush"
)

const (
	http403 = http.StatusForbidden
	http429 = http.StatusTooManyRequests
)

// defaultReason is the reason a scripted Step with no Reason answers.
func defaultReason(status int) string {
	switch status {
	case http.StatusBadRequest:
		return BadDeviceToken
	case http.StatusForbidden:
		return Forbidden
	case http.StatusNotFound:
		return BadPath
	case http.StatusMethodNotAllowed:
		return MethodNotAllowed
	case http.StatusGone:
		return Unregistered
	case http.StatusRequestEntityTooLarge:
		return PayloadTooLarge
	case http.StatusTooManyRequests:
		return TooManyRequests
	case http.StatusServiceUnavailable:
		return ServiceUnavailable
	default:
		return InternalServerError
	}
}
