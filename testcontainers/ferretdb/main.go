// Command ferretdb runs a MongoDB-wire server (embedded FerretDB v1, SQLite backend by default,
// or its PostgreSQL backend) for meshguard's tests and demos, and checks that one answers.
//
//	ferretdb [-addr 127.0.0.1:27017] [-dir DATA_DIR] [-log-level info]   serve until SIGTERM/SIGINT
//	         [-handler sqlite|postgresql] [-postgresql-url postgres://USER@HOST:PORT/DB]
//	ferretdb ping [-timeout 2s] [ADDR]                                    exit 0 if ADDR answers `ping`
//
// With -handler postgresql the documents live in that PostgreSQL database (it must exist) and
// -dir is only created, not used.
//
// testcontainers/up builds it once into the cache folder and starts it in the background.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "ping" {
		os.Exit(ping(os.Args[2:]))
	}
	os.Exit(serve(os.Args[1:]))
}

// serve runs FerretDB on addr with its SQLite files in dir until a signal ends it.
func serve(args []string) int {
	fs := flag.NewFlagSet("ferretdb", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:27017", "TCP address to listen on")
	dir := fs.String("dir", "data", "directory for the SQLite databases (created if missing)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	handler := fs.String("handler", "sqlite", "backend: sqlite (files in -dir) or postgresql (-postgresql-url)")
	pgURL := fs.String("postgresql-url", "", "PostgreSQL connection string for -handler postgresql")
	_ = fs.Parse(args)

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: bad -log-level %q: %v\n", *level, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	abs, err := filepath.Abs(*dir)
	if err == nil {
		err = os.MkdirAll(abs, 0o755)
	}
	if err != nil {
		logger.Error("data directory", "dir", *dir, "error", err)
		return 1
	}

	config := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *addr},
		Logger:   logger,
		Handler:  *handler,
	}
	switch *handler {
	case "sqlite":
		// The SQLite backend wants a URI naming an existing directory, ending with a slash.
		config.SQLiteURL = "file:" + abs + "/"
	case "postgresql":
		if *pgURL == "" {
			fmt.Fprintln(os.Stderr, "ferretdb: -handler postgresql needs -postgresql-url")
			return 2
		}
		config.PostgreSQLURL = *pgURL
	default:
		fmt.Fprintf(os.Stderr, "ferretdb: bad -handler %q (sqlite or postgresql)\n", *handler)
		return 2
	}
	f, err := ferretdb.New(config)
	if err != nil {
		logger.Error("start", "error", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	logger.Info("serving", "addr", *addr, "handler", *handler, "dir", abs)
	if err := f.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("run", "error", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// ping sends the `ping` command over the wire protocol, as a client would.
func ping(args []string) int {
	fs := flag.NewFlagSet("ferretdb ping", flag.ExitOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	_ = fs.Parse(args)
	addr := "127.0.0.1:27017"
	if fs.NArg() > 0 {
		addr = fs.Arg(0)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	opts := options.Client().
		ApplyURI("mongodb://" + addr + "/?directConnection=true").
		SetServerSelectionTimeout(*timeout).
		SetConnectTimeout(*timeout)
	client, err := mongo.Connect(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb ping %s: %v\n", addr, err)
		return 1
	}
	defer func() { _ = client.Disconnect(context.Background()) }()

	var res bson.M
	if err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Decode(&res); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb ping %s: %v\n", addr, err)
		return 1
	}
	return 0
}
