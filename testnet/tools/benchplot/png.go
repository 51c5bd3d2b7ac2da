package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// PNG layout, in pixels. Text is basicfont's 7x13 (ASCII only), drawn at scale 2 for the
// title, tool names and bar labels and at scale 1 for the notes and the axis.
const (
	pngWidth    = 1100
	pngLeft     = 260 // tool names end here; bars start here
	pngRight    = 230 // room for the bar labels
	pngTop      = 70  // below the title and the "bound" label
	pngBarH     = 30
	pngNoteH    = 20 // the note line under a bar
	pngRowGap   = 14
	pngAxisH    = 40
	glyphW      = 7
	glyphH      = 13
	glyphAscent = 11
)

var (
	colWhite     = color.RGBA{255, 255, 255, 255}
	colText      = color.RGBA{20, 20, 20, 255}
	colNote      = color.RGBA{80, 80, 80, 255}
	colGrid      = color.RGBA{225, 225, 225, 255}
	colBound     = color.RGBA{200, 30, 30, 255}
	colReference = color.RGBA{74, 123, 208, 255}
	colRaftcast  = color.RGBA{208, 103, 58, 255}
)

// ascii replaces what basicfont cannot draw.
func ascii(s string) string {
	s = strings.ReplaceAll(s, "×", "x")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// drawText draws s with its top-left corner at (x, y), each font pixel scale×scale.
func drawText(dst *image.RGBA, x, y int, s string, scale int, c color.Color) {
	s = ascii(s)
	if s == "" {
		return
	}
	glyphs := image.NewAlpha(image.Rect(0, 0, len(s)*glyphW, glyphH))
	d := font.Drawer{Dst: glyphs, Src: image.Opaque, Face: basicfont.Face7x13, Dot: fixed.P(0, glyphAscent)}
	d.DrawString(s)
	b := glyphs.Bounds()
	for gy := b.Min.Y; gy < b.Max.Y; gy++ {
		for gx := b.Min.X; gx < b.Max.X; gx++ {
			if glyphs.AlphaAt(gx, gy).A < 128 {
				continue
			}
			r := image.Rect(x+gx*scale, y+gy*scale, x+(gx+1)*scale, y+(gy+1)*scale)
			draw.Draw(dst, r.Intersect(dst.Bounds()), image.NewUniform(c), image.Point{}, draw.Src)
		}
	}
}

func textWidth(s string, scale int) int { return len(ascii(s)) * glyphW * scale }

func fill(dst *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(dst, r.Intersect(dst.Bounds()), image.NewUniform(c), image.Point{}, draw.Src)
}

// vline draws a vertical line at x from y0 to y1, dashed when dash > 0, width w.
func vline(dst *image.RGBA, x, y0, y1, w, dash int, c color.Color) {
	for y := y0; y < y1; y++ {
		if dash > 0 && (y-y0)/dash%2 == 1 {
			continue
		}
		fill(dst, image.Rect(x-w/2, y, x-w/2+w, y+1), c)
	}
}

// png draws the chart: one horizontal bar per tool (time / bound), a grid with the axis
// below, the bound as a dashed red line at 1.0, each bar's label at its end and its note
// (CPU, RSS, origin bytes, speed-ups) under it.
func (c chart) png(w io.Writer) error {
	rowH := pngBarH + pngNoteH + pngRowGap
	height := pngTop + len(c.bars)*rowH + pngAxisH
	img := image.NewRGBA(image.Rect(0, 0, pngWidth, height))
	fill(img, img.Bounds(), colWhite)
	drawText(img, 12, 12, c.title, 2, colText)

	maxRatio := c.maxRatio()
	step := tickStep(maxRatio)
	axisMax := math.Ceil(maxRatio/step) * step
	plotW := pngWidth - pngLeft - pngRight
	xOf := func(r float64) int { return pngLeft + int(r/axisMax*float64(plotW)+0.5) }
	plotBottom := pngTop + len(c.bars)*rowH

	// Grid and axis labels.
	for v := 0.0; v <= axisMax+1e-9; v += step {
		x := xOf(v)
		vline(img, x, pngTop-8, plotBottom, 1, 0, colGrid)
		label := fmt.Sprintf("%g", v)
		drawText(img, x-textWidth(label, 1)/2, plotBottom+6, label, 1, colNote)
	}
	axisLabel := "time / bound"
	drawText(img, pngLeft+plotW/2-textWidth(axisLabel, 1)/2, plotBottom+22, axisLabel, 1, colNote)

	// Bars, then the bound over them, then the text over both.
	for i, b := range c.bars {
		y := pngTop + i*rowH
		col := colReference
		if b.raftcast {
			col = colRaftcast
		}
		fill(img, image.Rect(pngLeft, y, xOf(b.ratio), y+pngBarH), col)
	}
	xb := xOf(1)
	vline(img, xb, pngTop-8, plotBottom, 3, 6, colBound)
	drawText(img, xb-textWidth("bound", 1)/2, pngTop-24, "bound", 1, colBound)
	for i, b := range c.bars {
		y := pngTop + i*rowH
		drawText(img, pngLeft-12-textWidth(b.tool, 2), y+pngBarH/2-glyphH, b.tool, 2, colText)
		x1 := xOf(b.ratio)
		if lw := textWidth(b.label, 2); x1+8+lw <= pngWidth-4 {
			drawText(img, x1+8, y+pngBarH/2-glyphH, b.label, 2, colText)
		} else { // no room after the bar: inside its end
			drawText(img, max(pngLeft, x1-8-lw), y+pngBarH/2-glyphH, b.label, 2, colWhite)
		}
		if b.note != "" { // on white, so the bound line does not cross it
			fill(img, image.Rect(pngLeft, y+pngBarH+3, pngLeft+textWidth(b.note, 1)+2, y+pngBarH+4+glyphH), colWhite)
			drawText(img, pngLeft, y+pngBarH+4, b.note, 1, colNote)
		}
	}
	return png.Encode(w, img)
}
