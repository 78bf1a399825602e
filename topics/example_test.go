package topics_test

import (
	"errors"
	"fmt"

	"github.com/offq/offq/topics"
)

func ExampleMatch() {
	for _, name := range []string{"orders", "orders.eu", "orders.eu.created", "orders.eu.fr.created"} {
		fmt.Printf("%-22s *:%-5v >:%-5v *.created:%v\n", name,
			topics.Match("orders.*", name),
			topics.Match("orders.>", name),
			topics.Match("orders.*.created", name))
	}
	// Output:
	// orders                 *:false >:false *.created:false
	// orders.eu              *:true  >:true  *.created:false
	// orders.eu.created      *:false >:true  *.created:true
	// orders.eu.fr.created   *:false >:true  *.created:false
}

func ExampleValidatePattern() {
	for _, p := range []string{"orders.*.created", "orders.>", "orders.>.created", "orders.eu*", "orders..eu"} {
		fmt.Println(topics.ValidatePattern(p))
	}
	// Output:
	// <nil>
	// <nil>
	// topics: invalid pattern "orders.>.created": '>' must be the last token (byte 7)
	// topics: invalid pattern "orders.eu*": '*' must be a whole token (byte 9)
	// topics: invalid pattern "orders..eu": empty token ('..') (byte 7)
}

func ExampleValidateName() {
	err := topics.ValidateName("orders.*")
	fmt.Println(err)
	fmt.Println(errors.Is(err, topics.ErrInvalidName))

	var ne *topics.NameError
	if errors.As(err, &ne) {
		fmt.Printf("pos=%d reason=%q\n", ne.Pos, ne.Reason)
	}
	// Output:
	// topics: invalid name "orders.*": wildcard '*' not allowed in a name (byte 7)
	// true
	// pos=7 reason="wildcard '*' not allowed in a name"
}

func ExampleIsLiteral() {
	fmt.Println(topics.IsLiteral("orders.eu.created"))
	fmt.Println(topics.IsLiteral("orders.*.created"))
	// Output:
	// true
	// false
}

func ExampleHash() {
	fmt.Printf("%#x\n", topics.Hash("a"))
	fmt.Println(topics.Hash("orders.eu.created") == topics.Hash("orders.eu.created"))
	// Output:
	// 0xaf63dc4c8601ec8c
	// true
}
