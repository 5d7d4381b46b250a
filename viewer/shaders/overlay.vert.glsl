// Overlay geometry and textured quads, given in window pixels (origin top-left).
uniform vec2 u_size;            // window size in logical pixels
attribute vec2 a_pos;
attribute vec4 a_color;
attribute vec2 a_uv;
varying vec4 v_color;
varying vec2 v_uv;

void main() {
    v_color = a_color;
    v_uv = a_uv;
    gl_Position = vec4(2.0 * a_pos.x / u_size.x - 1.0, 1.0 - 2.0 * a_pos.y / u_size.y, 0.0, 1.0);
}
