// tether-redis-reader: is a target revoked, according to tether's Redis registry?
//
// An example reader of the Redis contract (docs/gateways.md, "The Redis contract") in Go, with
// the standard library only (RESP spoken directly). It answers exactly as tether's own
// RedisRegistry does:
//
//   - tether:revoked:<kind>:<id> exists                 -> revoked (exit 1)
//   - else, only if the registry sync vouches for Redis -> not revoked (exit 0):
//     tether:registry:partitions:<topic> = N > 0, every tether:registry:sync:<topic>:<p> is
//     "synced", and every tether:registry:fresh:<topic>:<p> (epoch ms) is at most
//     -staleness old
//   - otherwise                                         -> cannot tell (exit 3): the caller's
//     risk tier decides (fail closed on high-risk routes)
//
// Usage: tether-redis-reader -addr 127.0.0.1:6379 -topic tether.revocations token jti-8c1
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

type conn struct {
	c net.Conn
	r *bufio.Reader
}

// do sends one command and reads one reply: string, int64, nil, or []any.
func (k *conn) do(args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := k.c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	return k.read()
}

func (k *conn) read() (any, error) {
	line, err := k.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, errors.New(line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := readFull(k.r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = k.read(); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

func readFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Answer is what a reader may conclude.
type Answer int

const (
	NotRevoked Answer = 0
	Revoked    Answer = 1
	Unknown    Answer = 3
)

// Check answers for one target, reading the clock once.
func Check(k *conn, topic, kind, id string, staleness time.Duration, now time.Time) (Answer, error) {
	exists, err := k.do("EXISTS", "tether:revoked:"+kind+":"+id)
	if err != nil {
		return Unknown, err
	}
	if n, _ := exists.(int64); n == 1 {
		return Revoked, nil
	}
	count, err := k.do("GET", "tether:registry:partitions:"+topic)
	if err != nil {
		return Unknown, err
	}
	s, _ := count.(string)
	partitions, err := strconv.Atoi(s)
	if err != nil || partitions <= 0 {
		return Unknown, nil // no sync vouches for this Redis
	}
	keys := []string{"MGET"}
	for p := 0; p < partitions; p++ {
		keys = append(keys, fmt.Sprintf("tether:registry:sync:%s:%d", topic, p))
	}
	for p := 0; p < partitions; p++ {
		keys = append(keys, fmt.Sprintf("tether:registry:fresh:%s:%d", topic, p))
	}
	reply, err := k.do(keys...)
	if err != nil {
		return Unknown, err
	}
	values, _ := reply.([]any)
	if len(values) != 2*partitions {
		return Unknown, nil
	}
	oldest := now.Add(-staleness).UnixMilli()
	for p := 0; p < partitions; p++ {
		if mark, _ := values[p].(string); mark != "synced" {
			return Unknown, nil // being rebuilt, or lost
		}
		fresh, _ := values[partitions+p].(string)
		ms, err := strconv.ParseInt(fresh, 10, 64)
		if err != nil || ms < oldest {
			return Unknown, nil // the sync is behind, or Redis lost its writes
		}
	}
	return NotRevoked, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "Redis host:port")
	topic := flag.String("topic", "tether.revocations", "the revocations topic (with its prefix)")
	staleness := flag.Duration("staleness", 10*time.Second, "TETHER_REGISTRY_STALENESS_S")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: tether-redis-reader [flags] KIND ID")
		os.Exit(2)
	}
	c, err := net.DialTimeout("tcp", *addr, 2*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot tell:", err)
		os.Exit(int(Unknown))
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	answer, err := Check(&conn{c, bufio.NewReader(c)}, *topic, flag.Arg(0), flag.Arg(1), *staleness, time.Now())
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot tell:", err)
	}
	fmt.Println(map[Answer]string{NotRevoked: "not revoked", Revoked: "revoked", Unknown: "cannot tell"}[answer])
	os.Exit(int(answer))
}
