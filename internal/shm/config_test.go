package shm

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestDefaultConfigValidates(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	if !c.Equal(DefaultConfig()) {
		t.Fatal("DefaultConfig is not Equal to itself")
	}
	// DefaultConfig returns a fresh value: changing one copy must not change the next.
	c.Classes[0].Count = 1
	if DefaultConfig().Classes[0].Count == 1 {
		t.Fatal("DefaultConfig shares its Classes slice between calls")
	}
}

func TestValidateRejectsEachField(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string // a word the message must contain
	}{
		{"no classes", func(c *Config) { c.Classes = nil }, "size classes"},
		{"too many classes", func(c *Config) {
			c.Classes = nil
			for i := range MaxClasses + 1 {
				c.Classes = append(c.Classes, Class{Size: Size(64 * (i + 1)), Count: 1})
			}
		}, "size classes"},
		{"class size below 64", func(c *Config) { c.Classes[0].Size = 32 }, "class 0: size"},
		{"class size zero", func(c *Config) { c.Classes[0].Size = 0 }, "class 0: size"},
		{"class size not a multiple of 64", func(c *Config) { c.Classes[1].Size = 4000 }, "class 1: size"},
		{"class size above the limit", func(c *Config) { c.Classes[3].Size = MaxClassSize + 64 }, "class 3: size"},
		{"class count zero", func(c *Config) { c.Classes[2].Count = 0 }, "count 0"},
		{"class count above the limit", func(c *Config) { c.Classes[2].Count = MaxClassCount + 1 }, "count"},
		{"classes not ascending", func(c *Config) { c.Classes[1].Size = 256 }, "ascending"},
		{"classes descending", func(c *Config) { c.Classes[0], c.Classes[1] = c.Classes[1], c.Classes[0] }, "ascending"},
		{"inboxes zero", func(c *Config) { c.Inboxes = 0 }, "inboxes"},
		{"inboxes above the limit", func(c *Config) { c.Inboxes = MaxInboxes + 1 }, "inboxes"},
		{"inboxes beyond what a reference count holds", func(c *Config) { c.Inboxes = 8192 }, "inboxes"},
		{"inbox capacity one", func(c *Config) { c.InboxCapacity = 1 }, "inbox_capacity"},
		{"inbox capacity zero", func(c *Config) { c.InboxCapacity = 0 }, "inbox_capacity"},
		{"inbox capacity not a power of two", func(c *Config) { c.InboxCapacity = 1000 }, "inbox_capacity"},
		{"inbox capacity above the limit", func(c *Config) { c.InboxCapacity = MaxInboxCapacity * 2 }, "inbox_capacity"},
		{"topics zero", func(c *Config) { c.Topics = 0 }, "topics"},
		{"topics above the limit", func(c *Config) { c.Topics = MaxTopics + 1 }, "topics"},
		{"participants zero", func(c *Config) { c.Participants = 0 }, "participants"},
		{"participants above the limit", func(c *Config) { c.Participants = MaxParticipants + 1 }, "participants"},
		{"history depth above the limit", func(c *Config) { c.HistoryDepth = MaxHistoryDepth + 1 }, "history_depth"},
		{"held zero", func(c *Config) { c.Held = 0 }, "held"},
		{"held above the limit", func(c *Config) { c.Held = MaxHeld + 1 }, "held"},
		{"region too large", func(c *Config) {
			c.Classes = []Class{{Size: MaxClassSize, Count: MaxClassCount}}
		}, "region would be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.modify(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %q, want a message naming %q", err, tc.want)
			}
			if strings.HasPrefix(err.Error(), "offq: ") {
				t.Fatalf("message %q carries a package prefix: the layer that reports it adds its own", err)
			}
		})
	}
}

func TestValidateAcceptsLimits(t *testing.T) {
	c := Config{
		Classes:       []Class{{Size: 64, Count: 1}},
		Inboxes:       1,
		InboxCapacity: 2,
		Topics:        1,
		Participants:  1,
		HistoryDepth:  0,
		Held:          1,
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("smallest config: %v", err)
	}
	c.Classes = nil
	for i := range MaxClasses {
		c.Classes = append(c.Classes, Class{Size: Size(64 << i), Count: 1})
	}
	c.Inboxes, c.InboxCapacity, c.Participants, c.HistoryDepth, c.Held = 2, MaxInboxCapacity, 2, MaxHistoryDepth, MaxHeld
	if err := c.Validate(); err != nil {
		t.Fatalf("config at the per-field limits: %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	def := DefaultConfig()
	for _, tc := range []struct {
		name string
		toml string
		want func() Config
	}{
		{"empty keeps every default", "", func() Config { return def }},
		{"comments only", "# nothing here\n", func() Config { return def }},
		{"partial file keeps the other defaults", "inboxes = 128\ninbox_capacity = 4096\n", func() Config {
			c := DefaultConfig()
			c.Inboxes, c.InboxCapacity = 128, 4096
			return c
		}},
		{"every scalar", "inboxes = 3\ninbox_capacity = 8\ntopics = 5\nparticipants = 7\nhistory_depth = 0\nheld = 9\n", func() Config {
			c := DefaultConfig()
			c.Inboxes, c.InboxCapacity, c.Topics, c.Participants, c.HistoryDepth, c.Held = 3, 8, 5, 7, 0, 9
			return c
		}},
		{"classes replace the default classes", `
[[classes]]
size = "256B"
count = 4096
[[classes]]
size = "64KiB"
count = 64
`, func() Config {
			c := DefaultConfig()
			c.Classes = []Class{{Size: 256, Count: 4096}, {Size: 64 << 10, Count: 64}}
			return c
		}},
		{"sizes as strings with and without units and spaces", `
[[classes]]
size = "128"
count = 1
[[classes]]
size = "4K"
count = 2
[[classes]]
size = "64 KiB"
count = 3
[[classes]]
size = "1MiB"
count = 4
`, func() Config {
			c := DefaultConfig()
			c.Classes = []Class{{128, 1}, {4 << 10, 2}, {64 << 10, 3}, {1 << 20, 4}}
			return c
		}},
		{"sizes as numbers", `
classes = [ { size = 256, count = 10 }, { size = 4096, count = 20 } ]
`, func() Config {
			c := DefaultConfig()
			c.Classes = []Class{{256, 10}, {4096, 20}}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.toml))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if want := tc.want(); !reflect.DeepEqual(got, want) {
				t.Fatalf("ParseConfig:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		toml string
		want string // a word the message must contain
	}{
		{"unknown top-level key", "inboxs = 3\n", "inboxs"},
		{"unknown key in a class", "[[classes]]\nsize = 256\ncount = 1\ncolour = \"red\"\n", "colour"},
		{"syntax error", "inboxes = = 3\n", "invalid configuration"},
		{"wrong type", "inboxes = \"many\"\n", "invalid configuration"},
		{"negative number", "inboxes = -1\n", "invalid configuration"},
		{"bad size unit", "[[classes]]\nsize = \"4XB\"\ncount = 1\n", "4XB"},
		{"size overflow", "[[classes]]\nsize = \"4GiB\"\ncount = 1\n", "4GiB"},
		{"invalid value", "inbox_capacity = 1000\n", "inbox_capacity"},
		{"empty class list", "classes = []\n", "size classes"},
		{"class without count", "[[classes]]\nsize = 256\n", "count 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.toml))
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("ParseConfig(%q) = %+v, %v; want ErrInvalidConfig", tc.toml, c, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig(%q) error %q does not mention %q", tc.toml, err, tc.want)
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Fatalf("ParseConfig returned %+v with its error; want the zero Config", c)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()

	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("topics = 17\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(good)
	if err != nil {
		t.Fatalf("LoadConfig(good): %v", err)
	}
	want := DefaultConfig()
	want.Topics = 17
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("LoadConfig(good) = %+v, want %+v", c, want)
	}

	_, err = LoadConfig(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "load config") {
		t.Fatalf("LoadConfig(missing) = %v, want a wrapped fs.ErrNotExist", err)
	}

	_, err = LoadConfig(dir) // a directory
	if err == nil || !strings.HasPrefix(err.Error(), "load config") {
		t.Fatalf("LoadConfig(directory) = %v, want an error", err)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("inbox_capacity = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(bad)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "inbox_capacity") {
		t.Fatalf("LoadConfig(bad) = %v, want ErrInvalidConfig naming the file and the field", err)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		ok   bool
	}{
		{"0", 0, true},
		{"256", 256, true},
		{"256B", 256, true},
		{"256 B", 256, true},
		{"4K", 4 << 10, true},
		{"4KiB", 4 << 10, true},
		{"64 KiB", 64 << 10, true},
		{"  1MiB  ", 1 << 20, true},
		{"1M", 1 << 20, true},
		{"1GiB", 1 << 30, true},
		{"3G", 3 << 30, true},
		{"4294967295", 1<<32 - 1, true},
		{"4194303KiB", 4194303 << 10, true},
		{"4294967296", 0, false}, // does not fit 32 bits
		{"4GiB", 0, false},
		{"4096MiB", 0, false},
		{"", 0, false},
		{"B", 0, false},
		{"KiB", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5KiB", 0, false},
		{"4kib", 0, false}, // units are case-sensitive
		{"4 TiB", 0, false},
		{"0x100", 0, false},
		{"4KiBB", 0, false},
		{"four", 0, false},
	} {
		got, err := ParseSize(tc.in)
		switch {
		case tc.ok && (err != nil || got != tc.want):
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		case !tc.ok && err == nil:
			t.Errorf("ParseSize(%q) = %d, want an error", tc.in, got)
		case !tc.ok && (!errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.in)):
			t.Errorf("ParseSize(%q) error %q: want ErrInvalidConfig quoting the input", tc.in, err)
		}
	}
}

func TestSizeStringRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		s    Size
		want string
	}{
		{0, "0B"},
		{64, "64B"},
		{1536, "1536B"},
		{4 << 10, "4KiB"},
		{(1 << 20) + (1 << 10), "1025KiB"},
		{1 << 20, "1MiB"},
		{3 << 30, "3GiB"},
		{1<<32 - 1, "4294967295B"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("Size(%d).String() = %q, want %q", uint32(tc.s), got, tc.want)
		}
		text, err := tc.s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Size
		if err := back.UnmarshalText(text); err != nil || back != tc.s {
			t.Errorf("Size %d: MarshalText %q, UnmarshalText = %d, %v", uint32(tc.s), text, back, err)
		}
	}
	var s Size = 7
	if err := s.UnmarshalText([]byte("lots")); err == nil || s != 7 {
		t.Errorf("UnmarshalText(lots) = %v and changed the value to %d", err, s)
	}
}

func TestConfigDiffNamesField(t *testing.T) {
	base := DefaultConfig()
	for _, tc := range []struct {
		modify func(*Config)
		want   string
	}{
		{func(c *Config) { c.Inboxes++ }, "inboxes"},
		{func(c *Config) { c.InboxCapacity *= 2 }, "inbox_capacity"},
		{func(c *Config) { c.Topics++ }, "topics"},
		{func(c *Config) { c.Participants++ }, "participants"},
		{func(c *Config) { c.HistoryDepth++ }, "history_depth"},
		{func(c *Config) { c.Held++ }, "held"},
		{func(c *Config) { c.Classes[2].Count++ }, "class 2"},
		{func(c *Config) { c.Classes = c.Classes[:2] }, "size classes"},
	} {
		c := DefaultConfig()
		tc.modify(&c)
		if base.Equal(c) {
			t.Errorf("Equal reports a config differing in %s as equal", tc.want)
		}
		if d := base.diff(c); !strings.Contains(d, tc.want) {
			t.Errorf("diff = %q, want it to name %q", d, tc.want)
		}
	}
}

// TestLoadConfigBounded: LoadConfig reads a regular file of bounded size, and refuses at
// once a device (which would be read without end) or a FIFO (which would block).
func TestLoadConfigBounded(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxConfigFile)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/dev/zero": "not a regular file", fifo: "not a regular file", big: "larger than 1 MiB"} {
		if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadConfig(%s) = %v, want an error saying %q", path, err, want)
		}
	}
}

// TestMaxInboxesFitsReferences: a message delivered to every subscription a region can have,
// each also holding it as history, never needs more references than a slot can count.
func TestMaxInboxesFitsReferences(t *testing.T) {
	if need := 2*MaxInboxes + 2; need > maxRefs {
		t.Fatalf("MaxInboxes %d: a full fan-out with history needs %d references, a slot counts %d", MaxInboxes, need, maxRefs)
	}
}
