// u_textured = 0: flat colour; 1: texture times colour (text is white glyphs with alpha).
uniform int u_textured;
uniform sampler2D u_tex;
varying vec4 v_color;
varying vec2 v_uv;

void main() {
    if (u_textured == 1) {
        gl_FragColor = texture2D(u_tex, v_uv) * v_color;
    } else {
        gl_FragColor = v_color;
    }
}
