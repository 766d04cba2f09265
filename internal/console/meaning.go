package console

import (
	"strings"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// stageMeaning explains a test push's stage (push.Service.Test's, and the
// console's own "accepted") to an operator: what it checks and, when it
// failed, what to look at.
func stageMeaning(s push.Stage) string {
	switch s.Name {
	case "accepted":
		return "the console checked the form and started the test push"
	case "device":
		if s.OK {
			return "the push ID is in the device registry"
		}
		return "unknown push ID: the app never registered it, unregistered it, or the vendor said its token is gone and the device was removed"
	case "binding":
		return "a device pushes the messages of the user it is bound to; an unbound one (logged out) gets only test pushes"
	case "provider":
		if s.OK {
			return "the server has credentials for this provider and app"
		}
		return "the server has no credentials for this provider or app (bundle ID): check the push configuration"
	case "credentials":
		return "the vendor refused this app's credentials earlier, so nothing is sent for it until they are fixed and the server restarted"
	case "strategy":
		if s.OK {
			return "the push strategy (resourcesID) that sets the sound, priority, push type and category"
		}
		return "the resourcesID names no configured push strategy"
	case "render":
		if s.OK {
			return "the vendor's payload was built from the push configuration"
		}
		return "the payload could not be built (too large for the vendor, or invalid)"
	case "send":
		switch {
		case s.Pending:
			return "the request is on its way to the vendor: waiting for its answer"
		case s.OK:
			return "the vendor accepted the notification (its answer is below)"
		}
		return "the vendor refused the notification or did not answer (its answer and what it means are below)"
	}
	return ""
}

// outcomeMeaning explains a delivery-log entry to an operator: the
// decision and why.
func outcomeMeaning(outcome, reason string) string {
	switch outcome {
	case herald.PushSent:
		switch {
		case strings.Contains(reason, "do-not-disturb"):
			return "pushed silent: the recipient's push rule (" + reason + ")"
		case strings.Contains(reason, "silent badge update"):
			return "pushed: a silent badge update after a read on another device (" + reason + ")"
		}
		return "pushed: the vendor accepted the notification"
	case herald.PushHeld:
		return "held back by the recipient's push rule, to be sent when the window ends (" + orUnknown(reason) + ")"
	case herald.PushRetry:
		return "failed for now (" + orUnknown(reason) + "): tried again later with backoff"
	case herald.PushDropped:
		return "the vendor says the token is gone (" + orUnknown(reason) + "): device removed"
	case herald.PushFailed:
		return "failed for good (" + orUnknown(reason) + "): " + reasonMeaning(reason)
	case herald.PushExpired:
		return "not sent: its time to live ran out before the vendor took it"
	case herald.PushSkipped:
		switch {
		case strings.Contains(reason, "push rule"):
			return "held back by the recipient's push rule: " + reason
		case strings.Contains(reason, "acknowledged"):
			return "not pushed: the device was online and acknowledged the message"
		case strings.Contains(reason, "muted"):
			return "not pushed: the recipient muted the conversation"
		case strings.Contains(reason, "no push device"):
			return "not pushed: the recipient has no device registered for pushes (no binding)"
		case strings.Contains(reason, "no longer bound"):
			return "not pushed: no binding, the user logged out of that device"
		case strings.Contains(reason, "unregistered"):
			return "not pushed: the device was unregistered"
		case strings.Contains(reason, "call"):
			return "not pushed: the call no longer rang for this invitee"
		case strings.Contains(reason, "suspend"):
			return "not pushed: the app's credentials were refused by the vendor"
		}
		return "not pushed: " + orUnknown(reason)
	}
	return outcome
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// statusMeaning is what a vendor's HTTP status says.
func statusMeaning(p herald.PushProvider, status int) string {
	switch status {
	case 0:
		return "no answer: the request did not reach the vendor or its answer was lost"
	case 200, 201:
		return "accepted by the vendor"
	case 400:
		return "bad request: the vendor refused this push (see the reason)"
	case 401:
		return "the vendor refused the access token (it is fetched again once)"
	case 403:
		switch p {
		case herald.ProviderFCM:
			return "the token belongs to another Firebase project (SENDER_ID_MISMATCH), or the project's key may not send"
		case herald.ProviderWebPush:
			return "the push service refused the VAPID signature: the server's key or clock, or a subscription made with another key"
		}
		return "the vendor refused the credentials (certificate or provider token)"
	case 404:
		switch p {
		case herald.ProviderFCM:
			return "the registration token is not registered (UNREGISTERED: the app was uninstalled), or a wrong project"
		case herald.ProviderWebPush:
			return "the subscription is gone"
		}
		return "bad path"
	case 405:
		return "bad method"
	case 410:
		if p == herald.ProviderWebPush {
			return "the subscription expired or the user unsubscribed"
		}
		return "the device token is no longer active for the topic"
	case 413:
		return "the payload is too large"
	case 429:
		return "too many requests: the vendor throttles this device or server"
	case 500:
		return "the vendor had an internal error"
	case 503:
		return "the vendor is unavailable, shutting down, or applying flow control"
	}
	return ""
}

// reasonMeaning explains the vendor's reason strings: APNs' reasons
// (Apple's "Handling notification responses from APNs"), FCM's error codes
// and Huawei's result codes, which lead the reason Herald records.
func reasonMeaning(reason string) string {
	if m, ok := apnsReasons[reason]; ok {
		return m
	}
	code := reason
	if i := strings.IndexAny(reason, ": "); i > 0 {
		code = reason[:i]
	}
	return vendorReasons[code]
}

var vendorReasons = map[string]string{
	// FCM HTTP v1 (FcmError codes and google.rpc statuses).
	"UNREGISTERED":           "the registration token is no longer valid: the app was uninstalled or the token expired",
	"SENDER_ID_MISMATCH":     "the token belongs to another Firebase project",
	"INVALID_ARGUMENT":       "a malformed request, or an invalid registration token when the violation names message.token",
	"QUOTA_EXCEEDED":         "the project's or this device's sending quota is used up",
	"UNAVAILABLE":            "FCM is overloaded",
	"INTERNAL":               "FCM had an internal error",
	"THIRD_PARTY_AUTH_ERROR": "the APNs certificate or Web Push key uploaded to Firebase is refused",
	"PERMISSION_DENIED":      "the service account may not send for this project",
	"UNAUTHENTICATED":        "the access token was refused",
	// Huawei Push Kit result codes.
	"80000000": "success",
	"80100000": "partial success: the tokens it names are invalid",
	"80200001": "OAuth authentication failed: check the app ID and secret",
	"80200003": "the access token expired (a new one is fetched)",
	"80300002": "the app may not push (Push Kit not enabled or no permission)",
	"80300007": "the push token is invalid",
	"80300008": "the message is too large",
	"80300010": "too many tokens in one request",
	"80300011": "high-urgency messages are not granted to this app",
	"81000001": "Huawei had an internal error",
}

var apnsReasons = map[string]string{
	"BadCollapseId":               "the collapse identifier exceeds 64 bytes",
	"BadDeviceToken":              "the device token is invalid, or belongs to the other environment (a development build's token sent to production or back)",
	"BadExpirationDate":           "the apns-expiration value is bad",
	"BadMessageId":                "the apns-id value is bad",
	"BadPriority":                 "the apns-priority value is bad",
	"BadTopic":                    "the apns-topic is invalid (wrong suffix for the push type)",
	"DeviceTokenNotForTopic":      "the device token does not match the topic: the token belongs to another app (bundle ID)",
	"DuplicateHeaders":            "one or more headers are repeated",
	"IdleTimeout":                 "idle timeout",
	"InvalidPushType":             "the apns-push-type value is invalid",
	"MissingDeviceToken":          "the device token is not in the request path",
	"MissingTopic":                "apns-topic is missing and required",
	"PayloadEmpty":                "the message payload is empty (or not a JSON object with aps)",
	"TopicDisallowed":             "pushing to this topic is not allowed with these credentials",
	"BadCertificate":              "the certificate is invalid",
	"BadCertificateEnvironment":   "the client certificate is for the wrong environment",
	"ExpiredProviderToken":        "the provider token is stale: a new one is generated",
	"Forbidden":                   "the specified action is not allowed",
	"InvalidProviderToken":        "the provider token is not valid, or its signature could not be verified (team ID, key ID, .p8 key)",
	"MissingProviderToken":        "no provider certificate or provider token was given",
	"BadEnvironmentKeyIdInToken":  "the key in the provider token is not valid for this environment",
	"BadPath":                     "the request path is invalid",
	"MethodNotAllowed":            "the method is not POST",
	"ExpiredToken":                "the device token has expired",
	"Unregistered":                "the device token is inactive for the topic: the app was uninstalled or notifications turned off",
	"PayloadTooLarge":             "the payload is too large (4096 bytes, 5120 for VoIP)",
	"TooManyProviderTokenUpdates": "the provider token is being updated too often (at most once every 20 minutes)",
	"TooManyRequests":             "too many requests to the same device token",
	"InternalServerError":         "an internal server error occurred at the vendor",
	"ServiceUnavailable":          "the vendor's service is unavailable",
	"Shutdown":                    "the vendor's server is shutting down",
	"HTTP2Required":               "the emulator's own answer: pushes need HTTP/2",
}
