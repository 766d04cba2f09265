//go:build race

package proto

// raceBuild is set when the tests run with -race, which allocates where
// a normal build does not: allocation counts are checked without it.
const raceBuild = true
