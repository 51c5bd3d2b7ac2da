package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// svg draws the same chart as png, as SVG text.
func (c chart) svg() string {
	const (
		width, left, right, top = 1100.0, 260.0, 230.0, 70.0
		barH, noteH, gap, axisH = 30.0, 20.0, 14.0, 40.0
	)
	rowH := barH + noteH + gap
	height := top + float64(len(c.bars))*rowH + axisH
	maxRatio := c.maxRatio()
	step := tickStep(maxRatio)
	axisMax := math.Ceil(maxRatio/step) * step
	plotW := width - left - right
	xOf := func(r float64) float64 { return left + r/axisMax*plotW }
	bottom := top + float64(len(c.bars))*rowH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="16">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="12" y="30" font-size="20">%s</text>`+"\n", html.EscapeString(c.title))
	for v := 0.0; v <= axisMax+1e-9; v += step {
		x := xOf(v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e1e1e1"/>`+"\n", x, top-8, x, bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" font-size="12" fill="#505050">%g</text>`+"\n", x, bottom+16, v)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" font-size="12" fill="#505050">time / bound</text>`+"\n", left+plotW/2, bottom+32)
	for i, bar := range c.bars {
		y := top + float64(i)*rowH
		color := "#4a7bd0"
		if bar.raftcast {
			color = "#d0673a"
		}
		x1 := xOf(bar.ratio)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%s</text>`+"\n", left-12, y+barH-9, html.EscapeString(bar.tool))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.1f" height="%.0f" fill="%s"/>`+"\n", left, y, x1-left, barH, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f">%s</text>`+"\n", x1+8, y+barH-9, html.EscapeString(bar.label))
		if bar.note != "" {
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="12" fill="#505050">%s</text>`+"\n", left, y+barH+15, html.EscapeString(bar.note))
		}
	}
	xb := xOf(1)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#c81e1e" stroke-width="3" stroke-dasharray="6 6"/>`+"\n", xb, top-8, xb, bottom)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" font-size="12" fill="#c81e1e">bound</text>`+"\n", xb, top-14)
	b.WriteString("</svg>\n")
	return b.String()
}
