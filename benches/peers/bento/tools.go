//go:build tools

package tools

import _ "github.com/warpstreamlabs/bento/public/components/all"
