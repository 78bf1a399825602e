// Package topics defines the syntax of offq topic names and subscription
// patterns, validates them and matches patterns against names.
//
// The package is pure: it knows nothing of shared memory and imports only the
// standard library. Every function is safe for concurrent use, and the ones
// on the publish and delivery paths ([Match], [Hash], and [ValidateName] and
// [ValidatePattern] on valid input) do not allocate.
//
// # Syntax
//
// Names and patterns follow NATS subject syntax. A topic name is a sequence
// of tokens separated by '.', such as "orders.eu.created". Rules:
//
//   - A name is at most [MaxNameLen] (128) bytes and at most [MaxTokens]
//     (32) tokens long.
//   - Tokens are non-empty: no leading, trailing or doubled '.'.
//   - A name is valid UTF-8 and contains no whitespace and no control
//     characters (as classified by unicode.IsSpace and unicode.IsControl),
//     and nothing invisible: no format characters (category Cf: zero-width
//     space and joiners, bidirectional controls, the byte-order mark), no
//     other default-ignorable code points (Hangul fillers, U+034F), no
//     private-use and no unassigned code points. What a name shows is what it
//     is.
//   - A concrete name, the kind a publisher uses, contains neither '*' nor '>'.
//
// A pattern, the kind a subscriber uses, follows the same rules, except that
// it may contain the wildcards '*' and '>', each only as a whole token:
//
//   - "*" matches exactly one token, whatever it is.
//   - ">" matches one or more tokens, and may appear only as the last token.
//
// So "orders.*.created" and "orders.>" are valid patterns, while "orders.eu*",
// "orders.>.created" and "orders..created" are not. [ValidateName] and
// [ValidatePattern] report what is wrong and where as a [*NameError], which
// wraps [ErrInvalidName].
//
// # Matching
//
// [Match] reports whether a name matches a pattern, token by token:
//
//	pattern             name                    match
//	orders.eu.created   orders.eu.created       yes
//	orders.eu.created   orders.us.created       no
//	orders.*.created    orders.eu.created       yes
//	orders.*.created    orders.eu.fr.created    no  ('*' is exactly one token)
//	orders.*            orders                  no
//	orders.>            orders.eu               yes
//	orders.>            orders.eu.fr.created    yes
//	orders.>            orders                  no  ('>' needs at least one token)
//	>                   anything.at.all         yes
//	*.*                 a.b                     yes
//
// A pattern without wildcards ([IsLiteral]) matches exactly the name equal to
// it, so a subscription to it can be found with a plain table lookup keyed by
// [Hash] instead of a scan.
package topics
