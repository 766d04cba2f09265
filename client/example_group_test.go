package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
)

// A group: create it with its first members, hear of its changes, send
// to it with a mention that gets through a member's do-not-disturb.
func ExampleClient_SendGroupMessage() {
	c := client.New("ws://localhost:7400/ws", client.Options{
		Handlers: client.Handlers{
			MessageReceived: func(msgs []*herald.Message, info client.ReceiveInfo) {
				if info.ConvType == client.ConvGroup {
					fmt.Printf("%d messages in group %s\n", len(msgs), info.ConvID)
				}
			},
			GroupChanged: func(ev client.GroupEvent) {
				fmt.Printf("group %s: %s by %s (%v)\n", ev.GroupID, ev.Action, ev.Operator, ev.Users)
			},
		},
	})
	defer c.Close()
	ctx := context.Background()
	if err := c.Login(ctx, "alice", "h1.token-from-your-backend"); err != nil {
		log.Fatal(err)
	}

	g, err := c.CreateGroup(ctx, client.NewGroup{GroupID: "hikers", Name: "Hikers"}, []string{"bob", "carol"})
	if errors.Is(err, client.ErrConflict) {
		log.Fatal("the group ID is taken")
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Println(g.GroupID, g.MemberCount, "members")

	msg := client.TextMessage("@bob summit at 6")
	msg.Mentions = []string{"bob"}
	msg.NotifyMentioned = true // bob is pushed even if he muted the group
	msg.Push = &herald.PushConfig{Title: "Hikers", Content: "summit at 6"}
	if _, err := c.SendGroupMessage(ctx, "hikers", msg); errors.Is(err, client.ErrForbidden) {
		fmt.Println("no longer a member")
	}
}
